"""Typed config groups take no new keys: the composed config compared with its schema (ptq/schema.py).

Hydra's `+key=value` adds a key even under a structured (dataclass) node, so `+calib.n_image=64` would compose and
run with the setting unused. Every job (single run and each job of a multirun) and the command line compare the
composed config with the dataclasses here; only the schema's free-form dictionaries (fields typed
`dict[str, Any]`: `model.kwargs`, `data.transform`, a slot's `options`) take new keys.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing

from omegaconf import DictConfig

from ptq.errors import PTQError


@functools.cache
def schema_fields(schema: type) -> dict[str, object]:
    """A dataclass's field name -> its type hint (string annotations resolved)."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def unwrap_optional(hint: object) -> object:
    """`X | None` -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def is_free_form(hint: object) -> bool:
    """A `dict[...]` field: its keys are the user's (timm kwargs, a quantizer's options, transform overrides)."""
    return typing.get_origin(unwrap_optional(hint)) is dict or unwrap_optional(hint) is dict


def free_form_keys(schema: type, prefix: str = "") -> list[str]:
    """Dotted paths of every free-form dictionary in `schema` (for error messages and docs)."""
    out = []
    for name, hint in schema_fields(schema).items():
        hint = unwrap_optional(hint)
        if is_free_form(hint):
            out.append(f"{prefix}{name}")
        elif dataclasses.is_dataclass(hint):
            out.extend(free_form_keys(hint, f"{prefix}{name}."))
    return out


def first_unknown_key(cfg: DictConfig, schema: type, path: str = "") -> tuple[str, str, list[str]] | None:
    """The first key of `cfg` that `schema` does not declare, as (dotted key, its parent's path, the valid keys
    there); None when every key is declared. The root's `hydra` node (compose with the Hydra config) is skipped."""
    fields = schema_fields(schema)
    for key in cfg.keys():
        key = str(key)
        if not path and key == "hydra":
            continue
        full = f"{path}.{key}" if path else key
        if key not in fields:
            return full, path, sorted(fields)
        hint = unwrap_optional(fields[key])
        node = cfg._get_node(key)
        if dataclasses.is_dataclass(hint) and isinstance(node, DictConfig) and not node._is_none() \
                and not node._is_missing() and not node._is_interpolation():
            found = first_unknown_key(node, hint, full)
            if found:
                return found
    return None


def schema_level(schema: type, key: str) -> tuple[str, list[str], bool]:
    """For a dotted `key` that may not exist: the deepest declared level above it, as (its path, its valid keys,
    whether it is a free-form dictionary, where `+key=value` adds the key)."""
    path, parts = [], key.split(".")[:-1]
    for part in parts:
        hint = unwrap_optional(schema_fields(schema).get(part))
        if is_free_form(hint):
            return ".".join([*path, part]), [], True
        if not dataclasses.is_dataclass(hint):
            break
        schema, path = hint, [*path, part]
    return ".".join(path), sorted(schema_fields(schema)), False


def unknown_key_message(key: str, parent: str, valid: list[str], schema: type, line: str = "") -> str:
    """One line: the key, the keys valid at its level, and which dictionaries do take new keys."""
    where = f"keys of {parent}" if parent else "top-level keys"
    given = f" in {line}" if line else ""
    slots = (re.sub(r"^quantizer\.slots\.\w+\.", "quantizer.slots.<slot>.", k) for k in free_form_keys(schema))
    free = ", ".join(dict.fromkeys(slots)) or "(none)"
    return (f"unknown config key '{key}'{given}; valid {where}: {', '.join(valid) or '(none)'} "
            f"(typed groups take no new keys, with + or without; only {free} do)")


def check_known_keys(cfg: DictConfig, schema: type | None = None) -> None:
    """Raise PTQError naming the first key of `cfg` that its schema (default: ptq.schema.Config) lacks."""
    if schema is None:
        from ptq.schema import Config as schema
    found = first_unknown_key(cfg, schema)
    if found:
        raise PTQError(unknown_key_message(*found, schema=schema))
