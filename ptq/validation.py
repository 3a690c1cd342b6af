"""Every type and range rule of the resolved config, checked once before a job does any work.

`RULES` is the table (key path, kind, range, what a value means); `CROSS_CHECKS` are the rules that relate several
keys. A broken rule raises PTQError with one line naming the key, the value and what is valid (exit code 2). Rules
whose key is absent from the config are skipped unless `required`, so the table survives keys that move.
Checks that need the built model or the files (model input vs data images, calib.n_images vs the train split,
corrupt data files) live where those are read (ptq/data/).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from ptq.config_keys import check_known_keys
from ptq.errors import PTQError

SEED_MAX = 2**32 - 1  # numpy's RandomState takes seeds in 0..2^32-1
_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """One config key: `kind` int | number | bool | choice | file | folder; `low`/`high` bounds (inclusive;
    `low_open`: > low); `nullable`: null is valid (and means `null_means`). A file must exist, be a readable
    non-empty file; a folder an existing readable folder (relative paths: from the current folder, then the
    project root, as the model loader looks them up)."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    required: bool = False
    null_means: str = ""

    def valid_text(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "file":
            text = "a readable, non-empty file"
        elif self.kind == "folder":
            text = "a readable folder"
        elif self.kind == "choice":
            text = ", ".join(self.choices)
        else:
            noun = "an integer" if self.kind == "int" else "a number"
            if self.high is not None:
                text = f"{noun} in {_num(self.low)}..{_num(self.high)}"
            elif self.low is not None:
                text = f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
            else:
                text = noun
        if self.nullable:
            text += f", or null{f' ({self.null_means})' if self.null_means else ''}"
        return text


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


RULES: tuple[Rule, ...] = (
    Rule("seed", "int", 0, SEED_MAX, required=True),
    Rule("calib.seed", "int", 0, SEED_MAX, required=True),
    Rule("calib.n_images", "int", 1, required=True),
    Rule("calib.batch_size", "int", 1),
    Rule("calib.chunk_mb", "number", 0, low_open=True, nullable=True, null_means="8 on CPU, 1024 on CUDA"),
    Rule("calib.capture_mb", "number", 0, low_open=True),
    Rule("calib.fast_paths", "bool"),
    Rule("eval.batch_size", "int", 1, required=True),
    Rule("metric.fisher_draws", "int", 1),
    Rule("data.max_test", "int", 1, nullable=True, null_means="all test images"),
    Rule("data.workers", "int", 0),
    Rule("data.download", "bool"),
    Rule("quantizer.search.n", "int", 1),
    Rule("quantizer.search.rounds", "int", 1),
    Rule("quantizer.search.alpha", "number", 0, low_open=True),
    Rule("quantizer.search.beta", "number", 0, low_open=True),
    Rule("quantizer.slots.softmax.options.m_max", "int", 0),  # the twin softmax split range (when set)
    Rule("threads", "int", 1, nullable=True, null_means="cores // parallel jobs"),
    Rule("force", "bool"),
    Rule("progress", "bool"),
    Rule("model.checkpoint", "file", nullable=True, null_means="the model's own or random weights"),
    Rule("quantizer.load", "file", nullable=True, null_means="calibrate"),
    # data.root: a cross check (_data_root), since Fashion-MNIST may be downloaded into a missing folder
)


def schema_choice_rules(schema: type | None = None, prefix: str = "") -> tuple[Rule, ...]:
    """A choice rule for every schema field declared with `ptq.schema.choice` (its vocabulary stated once, in the
    schema), e.g. calib.mode, calib.transform, data.on_bad_file."""
    import dataclasses

    from ptq.config_keys import schema_fields, unwrap_optional

    if schema is None:
        from ptq.schema import Config as schema
    rules: list[Rule] = []
    hints = schema_fields(schema)
    for f in dataclasses.fields(schema):
        hint = unwrap_optional(hints[f.name])
        if "choices" in f.metadata:
            rules.append(Rule(f"{prefix}{f.name}", "choice", choices=tuple(f.metadata["choices"])))
        elif dataclasses.is_dataclass(hint):
            rules.extend(schema_choice_rules(hint, f"{prefix}{f.name}."))
    return tuple(rules)


RULES += schema_choice_rules()


def _select(cfg: DictConfig, key: str) -> object:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception as e:  # noqa: BLE001 - e.g. an interpolation that cannot be resolved
        raise PTQError(f"{key} cannot be resolved ({type(e).__name__}: {e})") from None


def rule_problem(rule: Rule, value: object) -> str | None:
    """Why `value` breaks `rule` (a phrase), or None."""
    if value is None:
        return None if rule.nullable else "is not set"
    if rule.kind == "bool":
        return None if isinstance(value, bool) else "is not a boolean"
    if rule.kind == "choice":
        return None if value in rule.choices else "is not a valid choice"
    if rule.kind in ("file", "folder"):
        return path_problem(str(value), rule.kind) if str(value) else None  # "" means none, like null
    if isinstance(value, bool) or not isinstance(value, (int, float) if rule.kind == "number" else int):
        return f"is not {'an integer' if rule.kind == 'int' else 'a number'}"
    if rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low):
        return "is too small"
    if rule.high is not None and value > rule.high:
        return "is too large"
    return None


def path_problem(text: str, kind: str) -> str | None:
    """Why `text` is not a usable file / folder, or None."""
    import os

    from ptq.models.registry import resolve_path

    path = resolve_path(text)
    if not path.exists():
        return "does not exist"
    if kind == "file" and not path.is_file():
        return "is a folder, not a file" if path.is_dir() else "is not a regular file"
    if kind == "folder" and not path.is_dir():
        return "is a file, not a folder"
    if not os.access(path, os.R_OK | (os.X_OK if kind == "folder" else 0)):
        return "cannot be read (permissions)"
    if kind == "file" and path.stat().st_size == 0:
        return "is empty"
    return None


def valid_text(key: str) -> str | None:
    """What is valid for `key`, from its rule (None when the table has no rule for it)."""
    return next((rule.valid_text() for rule in RULES if rule.key == key), None)


def check_rules(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    for rule in rules:
        value = _select(cfg, rule.key)
        if value is _ABSENT:
            if rule.required:
                raise PTQError(f"{rule.key} is missing from the config; valid: {rule.valid_text()}")
            continue
        problem = rule_problem(rule, value)
        if problem:
            shown = "null" if value is None else value
            raise PTQError(f"{rule.key}={shown} {problem}; valid: {rule.valid_text()}")


def _search_range(cfg: DictConfig) -> None:
    """The scale search scans [alpha, beta] x the initial scale: an empty interval searches nothing."""
    alpha, beta = _select(cfg, "quantizer.search.alpha"), _select(cfg, "quantizer.search.beta")
    if _ABSENT not in (alpha, beta) and beta <= alpha:
        raise PTQError(f"quantizer.search.beta={beta} must exceed quantizer.search.alpha={alpha}; valid: "
                       "alpha < beta (e.g. 0.01 and 1.2)")


def _data_root(cfg: DictConfig) -> None:
    """data.root must be a readable folder; a missing one is left to the Fashion-MNIST loader, which downloads
    into it (data.download=true) or names the Debian package."""
    root = _select(cfg, "data.root")
    if root in (None, _ABSENT):
        return
    problem = path_problem(str(root), "folder")
    if problem == "does not exist" and _select(cfg, "data.name") == "fmnist":
        return
    if problem:
        raise PTQError(f"data.root={root} {problem}; valid: a readable folder, or null (the default location)")


CROSS_CHECKS: tuple[Callable[[DictConfig], None], ...] = (_search_range, _data_root)


def validate_config(cfg: DictConfig) -> None:
    """No key the schema lacks (ptq/config_keys.py), all rules of the table, then the cross-field checks; raises
    PTQError on the first broken one."""
    check_known_keys(cfg)
    check_rules(cfg)
    for check in CROSS_CHECKS:
        check(cfg)
