"""The runs frame of a report: every results.json under the sweep folders as one record (its settings, the part
of its config that can change its numbers; `load_records`, `usable`), and the settings that vary among a method's
runs, worded as a paper labels a column (`varying_settings`, `add_setting_labels`). The bottom of ptq.report:
tables (ptq/report/tables.py) and renderers read it."""
from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import pandas as pd

from ptq.methods import method_labels
from ptq.plot_style import model_label, outlier_profile
from ptq.reference_results import ablation_flags
from ptq.results_file import BOOKKEEPING_KEYS, RESULTS_FILE, RESULTS_SCHEMA_VERSION, reject_untrusted
from ptq.results_file import flat_config as _flatten
from ptq.results_file import read_results as load_results_file

SCHEMA_VERSIONS = tuple(range(1, RESULTS_SCHEMA_VERSION + 1))  # versions this report reads (no field: version 1)
FORMATS = ("md", "csv", "tex")
LAYOUTS = ("auto", "main", "ablation", "metrics")
# Display names of the quantizer presets, in report order: each method's `label` in ptq/methods/<preset>.yaml; any
# other preset is shown by its name.
METHOD_LABELS = method_labels()
# Settings that are the table's own axes (rows, columns), never a split.
AXIS_KEYS = ("model.name", "quantizer.name", "quantizer.enabled", "bits.w", "bits.a")
# Settings on which runs are repeats of one measurement: averaged, mean ± std.
REPLICATE_KEYS = ("seed", "calib.seed")
# Settings never worded into a column label; a trailing dot covers a whole group: the job-control keys
# (ptq.results_file.BOOKKEEPING_KEYS, which cannot change a number) and settings a paper does not label a column by
# although resume and a sweep's job identity compare them (the device and the evaluation batch size may move a number
# in its last float digits; the logger says where results go). So this list is longer than the resume list.
LABEL_IGNORED_KEYS = (*BOOKKEEPING_KEYS, "device", "eval.batch_size", "logger.")
OFF = "off"  # bits.first_last of a run that leaves it null (or predates it): the slots' own bits
# How a setting reads in a column label ("{}" alone: the bare value; a function of the value: its text); any other
# is shown as `leaf value`. A new setting's wording is one line here.
SETTING_FORMATS = {"calib.n_images": "{} calib img", "metric.grad": "{} grad", "metric.name": "{}",
                   "quantizer.compat": "{}", "calib.mode": "{}", "calib.transform": "{} transform",
                   "data.max_test": "{} test img",
                   "bits.first_last": lambda v: "" if v == OFF else f"{v}-bit first/last"}
# Compensation presets (conf/compensate/) as papers name them, in report order (after none); any other by its name.
COMP_LABELS = {"qwt": "QwT", "qwt_v2": "QwT-v2", "erq": "ERQ"}
# Settings whose values sort in a declared order (any other value after them, by name), not default-first.
VALUE_ORDERS = {"compensate.name": ("none", *COMP_LABELS)}
# Reconstruction presets (conf/recon/) as papers name them; any other by its name.
RECON_LABELS = {"brecq": "BRECQ", "qdrop": "QDrop", "adalog": "AdaLog recon"}
# Config groups whose settings come first in a column label (the method, then calibration, then the metric).
LABEL_GROUP_ORDER = ("quantizer", "calib", "metric")
MARK = "✓"


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def bits_label(w, a) -> str:
    return f"W{w}A{a}" if w is not None and a is not None else "—"


def method_label(name) -> str:
    return METHOD_LABELS.get(str(name), str(name))


def run_settings(data: dict) -> dict:
    """The flattened settings that can change a run's numbers: its resolved config with the values the run
    resolved itself filled in (a null `group.key` the run recorded as top-level `key`, e.g. metric.grad from the
    compat mode -> grad), reduced by `ptq.sweep.effective_config`."""
    from ptq.sweep import effective_config

    config = copy.deepcopy(data.get("config") or {})
    for node in config.values():
        if isinstance(node, dict):
            for key, value in node.items():
                resolved = data.get(key)
                if value is None and resolved is not None and not isinstance(resolved, (dict, list)):
                    node[key] = resolved
    flat = _flatten(effective_config(config))
    if (config.get("quantizer") or {}).get("enabled", True) and flat.get("bits.first_last") is None:
        flat["bits.first_last"] = OFF  # null is a setting (off), not a missing value: it splits from 8
    return flat


def schema_version(data) -> int | None:
    """The results.json format version (no field: 1), or None when this is not a results record we can read."""
    if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
        return None
    version = data.get("schema_version", 1)
    return version if isinstance(version, int) and version in SCHEMA_VERSIONS else None


def simulation_only_text(deployability: dict | None) -> str | None:
    """The slots of a run that are simulation only, `slot: reason; ...` (results.json `deployability`, written by
    ptq/export): "" for a deployable run, None where the run did not record it."""
    if not deployability:
        return None
    return "; ".join(f"{slot}: {why.replace(' (simulation only)', '')}"
                     for slot, why in sorted((deployability.get("simulation_only") or {}).items()))


def record(path: Path, data: dict, root: Path | None = None) -> dict:
    """One row of the records table from a results.json (ok or failed)."""
    from ptq.metrics import NEEDS_GRAD

    cfg = data.get("config") or {}
    q, m, b, c = (cfg.get(k) or {} for k in ("quantizer", "metric", "bits", "calib"))
    pc = data.get("ptq_config") or {}
    enabled = bool(pc.get("enabled", q.get("enabled", True)))
    quantizer = data.get("quantizer") or q.get("name") or "?"
    metric = data.get("metric") or pc.get("metric") or m.get("name")
    grad = data.get("grad") or pc.get("grad") or m.get("grad")
    w, a = data.get("bits_w", pc.get("w_bits", b.get("w"))), data.get("bits_a", pc.get("a_bits", b.get("a")))
    top1, fp32 = data.get("top1"), data.get("top1_fp32")
    drop = data.get("drop")
    if drop is None and top1 is not None and fp32 is not None:
        drop = fp32 - top1
    folder = path.parent
    try:
        name = str(folder.relative_to(root)) if root is not None else str(folder)
    except ValueError:
        name = str(folder)
    settings = run_settings(data) if cfg else {}
    hg, st, gt = ablation_flags(settings)
    return {
        "path": name, "status": data.get("status", "?"),
        "model": model_label(data, cfg), "outliers": outlier_profile(cfg) or "none",
        "quantizer": quantizer, "method": method_label(quantizer), "enabled": enabled,
        "bits": bits_label(w, a) if enabled else "—", "w": w if enabled else None, "a": a if enabled else None,
        "metric": metric if enabled else None, "grad": grad if enabled and metric in NEEDS_GRAD else None,
        "compat": data.get("compat") or pc.get("compat") or q.get("compat"),
        "n_images": pc.get("n_images", c.get("n_images")) if enabled else None,
        "calib_seed": pc.get("seed", c.get("seed")) if enabled else None,
        "mode": pc.get("mode", c.get("mode")) if enabled else None,
        "twin_softmax": st if enabled else None, "twin_gelu": gt if enabled else None,
        "top1": top1, "top1_fp32": fp32, "drop": drop, "top5": data.get("top5"),
        "agreement": data.get("agreement"), "kl_fp32": data.get("kl_fp32"),
        "deployable": (data.get("deployability") or {}).get("deployable"),   # ptq/export (None: not recorded)
        "simulation_only": simulation_only_text(data.get("deployability")),  # why not ("": deployable)
        "calib_seconds": data.get("calib_seconds"), "num_test": data.get("num_test"),
        "duplicate_of": data.get("duplicate_of"), "error": data.get("error"),
        "recon": (settings.get("recon.name") or "none") if enabled else None,
        **compensation_columns(data, settings, enabled),
        "HG": hg, "schema_version": schema_version(data), "config": _flatten(cfg), "settings": settings,
        "slots": resolved_slots(data) if enabled else {},
        "top1_fp32_mlp": (data.get("mlp_reconstruction") or {}).get("top1_fp32_mlp"),   # float after MLP recon
    }


# Columns of the records table that are the report's own working data, not written to runs.csv.
INTERNAL_COLUMNS = ("HG", "schema_version", "config", "settings", "slots", "top1_fp32_mlp", "compensation_record")
# runs.csv columns of the compensation stage (ptq/compensate/): written only when some run recorded one.
COMPENSATION_COLUMNS = ("compensate", "compensate_compat", "compensate_kept", "added_params", "added_macs_per_image",
                        "compensate_seconds")


def compensation_columns(data: dict, settings: dict, enabled: bool) -> dict:
    """A run's compensation (results.json `compensation`, ptq/compensate/): its preset and form, the maps kept (ERQ:
    the layers it edited), the parameters and MACs per image it adds and its seconds; the costs are None where the
    run recorded no compensation (compensate=none, or results from before the stage)."""
    comp = data.get("compensation") or {}
    name = settings.get("compensate.name") or "none"
    return {"compensate": name if enabled else None,
            "compensate_compat": comp.get("compat", settings.get("compensate.compat")) if name != "none" else None,
            "compensate_kept": comp.get("kept"), "added_params": comp.get("added_params"),
            "added_macs_per_image": comp.get("added_macs_per_image"), "compensate_seconds": comp.get("seconds"),
            "compensation_record": comp or None}


def compensated(df: pd.DataFrame) -> bool:
    """Whether some run of the frame recorded a compensation stage: only then do the report's compensation and
    cost columns appear, so the tables of runs without one regenerate unchanged."""
    return bool(len(df)) and df["compensation_record"].notna().any()


def resolved_slots(data: dict) -> dict:
    """slot -> its resolved spec (ptq/quant/slots.py SlotSpec as a dict): results.json's ptq_config.slots, else
    resolved from the recorded config (older or rebuilt files), {} where neither is possible."""
    recorded = (data.get("ptq_config") or {}).get("slots")
    if recorded:
        return recorded
    cfg = data.get("config") or {}
    q, b = cfg.get("quantizer") or {}, cfg.get("bits") or {}
    if not q.get("slots") or "w" not in b or "a" not in b:
        return {}
    return _resolve_slots(json.dumps([q["slots"], q.get("compat", "paper"), b["w"], b["a"], b.get("first_last")]))


@functools.cache
def _resolve_slots(key: str) -> dict:
    import dataclasses

    from omegaconf import OmegaConf

    from ptq.quant.config import resolve_slots

    slots, compat, w, a, first_last = json.loads(key)
    try:
        specs = resolve_slots(OmegaConf.create(slots), compat, w, a, first_last)
    except Exception:  # noqa: BLE001 - a config this code cannot resolve only loses its settings table row
        return {}
    return {name: dataclasses.asdict(spec) for name, spec in specs.items()}


def find_results(paths) -> list[tuple[Path, Path]]:
    """(results.json, the sweep folder it was found under) for every results.json below `paths`."""
    found = []
    for p in map(Path, paths):
        if p.is_file() and p.name == RESULTS_FILE:
            found.append((p, p.parent))
        elif p.is_dir():
            found.extend((f, p) for f in sorted(p.rglob(RESULTS_FILE)))
        else:
            raise FileNotFoundError(f"{p} is neither a folder nor a {RESULTS_FILE}")
    return found


def read_results(paths) -> tuple[list[dict], list[dict]]:
    """(records, unreadable): one record per trustworthy results.json under `paths` (ptq/results_file.py, any
    schema version up to this code's); every other file as {"file", "reason"} (not JSON, not an object, missing or
    mistyped fields, an unknown schema_version)."""
    rows, unreadable, loaded = [], [], []
    once = {}   # a file under two of the given folders is read once (under the first)
    for path, root in find_results(paths):
        once.setdefault(path.resolve(), (path, root))
    for path, root in once.values():
        data, problem = load_results_file(path, range(1, RESULTS_SCHEMA_VERSION + 1))
        if data is None:
            unreadable.append({"file": str(path), "reason": problem})
            continue
        loaded.append((path, root, data))
    rejected = reject_untrusted([(path, data) for path, _, data in loaded])   # another job's file, a copied run
    for path, root, data in loaded:
        if path in rejected:
            unreadable.append({"file": str(path), "reason": f"rejected: {rejected[path]}"})
        else:
            rows.append(record(path, data, root))
    return rows, unreadable


def _records_frame(rows: list[dict]) -> pd.DataFrame:
    columns = list(record(Path(RESULTS_FILE), {}).keys())
    return pd.DataFrame(rows, columns=columns)


def load_records(paths) -> pd.DataFrame:
    """Every readable results.json under `paths` as one row (see `read_results` for the files left out)."""
    return _records_frame(read_results(paths)[0])


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Finished runs that are not copies of another job."""
    ok = df[(df["status"] == "ok") & df["duplicate_of"].isna() & df["top1"].notna()]
    return ok.copy()


# ---------------------------------------------------------------------------------------------------------------
# Which settings vary


def _is_axis_or_bookkeeping(key: str) -> bool:
    return any(key == b or (b.endswith(".") and key.startswith(b))
               for b in AXIS_KEYS + REPLICATE_KEYS + LABEL_IGNORED_KEYS)


def _value_id(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def varying_settings(runs: pd.DataFrame, within: list[str]) -> dict[str, list[str]]:
    """method -> the settings (not axes, seeds or bookkeeping) that take more than one value among the runs of
    one group of `within` columns (method and model at least). A setting a run lacks (e.g. the gradient source
    of a metric that reads none) does not count as a value."""
    out: dict[str, list[str]] = {}
    if not len(runs):
        return out
    for key, group in runs.groupby(["method"] + within, dropna=False, sort=False):
        method = key[0] if isinstance(key, tuple) else key
        found = out.setdefault(method, [])
        seen: dict[str, set] = {}
        for settings in group["settings"]:
            for k, v in settings.items():
                if not _is_missing(v) and not _is_axis_or_bookkeeping(k):
                    seen.setdefault(k, set()).add(_value_id(v))
        found.extend(k for k, values in seen.items() if len(values) > 1 and k not in found)
    return {m: sorted(keys, key=_label_key_order(keys)) for m, keys in out.items()}


def _label_key_order(keys: list[str]):
    """Column labels list the method's settings, then calibration, then the metric, then the rest."""
    first = {k: i for i, k in enumerate(keys)}

    def order(key: str) -> tuple:
        group = key.split(".", 1)[0]
        rank = LABEL_GROUP_ORDER.index(group) if group in LABEL_GROUP_ORDER else len(LABEL_GROUP_ORDER)
        return (rank, first[key])

    return order


def setting_text(key: str, value) -> str:
    """One setting in a column label: `128 calib img`, `kl_self grad`, `official`, else `leaf value`."""
    if _is_missing(value):
        return ""  # e.g. the gradient source of a metric that reads none
    fmt = SETTING_FORMATS.get(key, key.rsplit(".", 1)[-1] + " {}")
    return fmt(value) if callable(fmt) else fmt.format(value)


def off_preset_texts(group: str, settings: dict, preset: dict, skip: tuple[str, ...]) -> list[str]:
    """`leaf value` for every setting of `group` (but `skip`) that the preset declares and the run changed, by key."""
    return [setting_text(key, settings[key]) for key in sorted(k for k in settings if k.startswith(f"{group}."))
            if key not in skip and key in preset and _value_id(settings[key]) != _value_id(preset[key])]


def recon_label(settings: dict) -> str:
    """The reconstruction of a run as a paper writes it: `+ BRECQ (300 it, 1024 img)`, plus every recon setting
    that differs from its preset (conf/recon/<name>.yaml) as `leaf value`; "" for none."""
    name = settings.get("recon.name", "none")
    if _is_missing(name) or name == "none":
        return ""
    preset = preset_defaults("recon", str(name))
    parts = [f"{settings.get('recon.iters', '?')} it", f"{settings.get('recon.n_images', '?')} img",
             *off_preset_texts("recon", settings, preset, ("recon.name", "recon.iters", "recon.n_images"))]
    return f"+ {RECON_LABELS.get(str(name), str(name))} ({', '.join(parts)})"


def compensate_label(settings: dict) -> str:
    """The compensation of a run as a paper writes it: `+ QwT`, `+ QwT (official)`, `+ ERQ (coe 1000)`: the
    preset's name, its form when not the paper's, and every compensate setting that differs from its preset
    (conf/compensate/<name>.yaml) as `leaf value`; "" for none."""
    name = settings.get("compensate.name", "none")
    if _is_missing(name) or name == "none":
        return ""
    preset = preset_defaults("compensate", str(name))
    compat = settings.get("compensate.compat")
    parts = [] if _is_missing(compat) or compat == preset.get("compensate.compat", "paper") else [str(compat)]
    parts += off_preset_texts("compensate", settings, preset, ("compensate.name", "compensate.compat"))
    return f"+ {COMP_LABELS.get(str(name), str(name))}" + (f" ({', '.join(parts)})" if parts else "")


# Config groups labelled as one phrase from all of the run's settings of the group (not setting by setting).
GROUP_LABELS = {"recon": recon_label, "compensate": compensate_label}


@functools.cache
def preset_defaults(group: str, name: str | None = None) -> dict:
    """The flattened default config with preset `name` of config group `group` (one argument: a quantizer
    preset), or {} when it does not compose."""
    if name is None:
        group, name = "quantizer", group
    try:
        from omegaconf import OmegaConf

        from ptq.cli import compose_config

        cfg = compose_config([f"{group}={name}", "logger=none"])
        return _flatten(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    except Exception:  # noqa: BLE001 - an unknown or broken preset only loses the default-first order
        return {}


def setting_value_order(quantizer: str, key: str, value) -> tuple:
    """Values of one setting: the preset's default first, then numbers numerically, then text."""
    if _is_missing(value):
        return (0, 0, "")
    if key in VALUE_ORDERS:
        order = VALUE_ORDERS[key]
        return (0, order.index(value), "") if value in order else (2, 0, str(value))
    default = preset_defaults(str(quantizer)).get(key, OFF if key == "bits.first_last" else None)
    default = OFF if key == "bits.first_last" and default is None else default
    if default is not None and _value_id(default) == _value_id(value):
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0, str(value))


def add_setting_labels(runs: pd.DataFrame, varying: dict[str, list[str]]) -> pd.DataFrame:
    """`setting` (the label of the varying settings) and `setting_order` (its sort key) for every run."""
    runs = runs.copy()
    labels, orders = [], []
    for _, r in runs.iterrows():
        keys = varying.get(r["method"], [])
        values = [r["settings"].get(k) for k in keys]
        texts, groups = [], set()
        for k, v in zip(keys, values):
            group = k.split(".", 1)[0]
            if group in GROUP_LABELS:  # the group's phrase once, where its first varying setting is
                texts.append("" if group in groups else GROUP_LABELS[group](r["settings"]))
                groups.add(group)
            else:
                texts.append(setting_text(k, v))
        labels.append(" ".join(filter(None, texts)))
        orders.append(tuple(setting_value_order(r["quantizer"], k, v) for k, v in zip(keys, values)))
    runs["setting"], runs["setting_order"] = labels, orders
    return runs
