"""Tables in the paper's layout from sweep folders: `python -m ptq.report SWEEP_DIR... [--out DIR] [--format ...]`.

Every results.json under the given folders (recursively) is one record. Records that are copies of a sibling job
(`duplicate_of`, see ptq/sweep.py) are left out of the numbers; failed jobs are listed separately; files that are
not a results record (not JSON, null, a list, a newer schema_version) are skipped and listed by name.

What goes where comes from the data: the settings of a run are its flattened resolved config, reduced to the part
that can change its numbers (`ptq.sweep.effective_config`, which asks the metric registry which metrics read a
gradient source). Runs that differ only in seeds (`REPLICATE_KEYS`) are repeats: a cell shows mean ± std (sample
std, ddof=1) over them. Any other setting that varies among the runs of one method on one model becomes part of
the column label (`PTQ4ViT W6A6 n=128`), never an average.

Layouts (`--layout`, default auto):
- main: rows = models, columns = FP32 then method × bits (× the settings that vary); the paper's table 1.
- ablation: rows = the HG / ST / GT switches (Hessian metric, softmax twin, GELU twin), columns = model × bits.
- metrics: rows = metric (and the gradient source of metrics that read one), columns = model × bits.
auto picks ablation when a twin switch varies within a method, metrics when only metric settings vary, else main.
Reference numbers (SPEC.md section 6, ptq/reference_results.py) appear in brackets beside ours for paper models.
`--wandb` also logs the tables to the sweep's W&B group (ptq/loggers/wandb_report.py).
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import sys
from pathlib import Path

import pandas as pd

from ptq.reference_results import ABLATION_ROWS, ablation_flags, ablation_reference, base_model_name, table1_reference
from ptq.results_file import RESULTS_FILE, RESULTS_SCHEMA_VERSION
from ptq.results_file import read_results as load_results_file

SCHEMA_VERSIONS = tuple(range(1, RESULTS_SCHEMA_VERSION + 1))  # versions this report reads (no field: version 1)
FORMATS = ("md", "csv", "tex")
LAYOUTS = ("auto", "main", "ablation", "metrics")
# Display names of the quantizer presets (conf/quantizer/); any other preset is shown by its name.
METHOD_LABELS = {"fp32": "FP32", "base_ptq": "BasePTQ", "ptq4vit": "PTQ4ViT", "repq_vit": "RepQ-ViT",
                 "ptq4vit_repq": "PTQ4ViT+RepQ", "adalog": "AdaLog"}
# Settings that are the table's own axes (rows, columns), never a split.
AXIS_KEYS = ("model.name", "quantizer.name", "quantizer.enabled", "bits.w", "bits.a")
# Settings on which runs are repeats of one measurement: averaged, mean ± std.
REPLICATE_KEYS = ("seed", "calib.seed")
# Settings that cannot change a run's numbers (bookkeeping); a trailing dot covers a whole group.
BOOKKEEPING_KEYS = ("force", "progress", "threads", "device", "eval.batch_size", "logger.")
# Short forms of settings in column labels ("{}" alone: the bare value); any other is shown as `leaf=value`.
SETTING_FORMATS = {"calib.n_images": "n={}", "metric.grad": "g={}", "metric.name": "{}", "quantizer.compat": "{}",
                   "calib.mode": "{}"}
# Config groups whose settings come first in a column label (the method, then calibration, then the metric).
LABEL_GROUP_ORDER = ("quantizer", "calib", "metric")
MARK = "✓"


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


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
    return _flatten(effective_config(config))


def schema_version(data) -> int | None:
    """The results.json format version (no field: 1), or None when this is not a results record we can read."""
    if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
        return None
    version = data.get("schema_version", 1)
    return version if isinstance(version, int) and version in SCHEMA_VERSIONS else None


def outlier_profile(cfg: dict) -> str | None:
    """The stress profile of the run's model (`model.outliers.profile`, ptq/models/outliers.py), None when off."""
    profile = ((cfg.get("model") or {}).get("outliers") or {}).get("profile")
    return None if profile in (None, "none") else str(profile)


def model_label(data: dict, cfg: dict) -> str:
    """The model's name; a stressed test-bed (an outlier profile) is its own model: `fmnist_vit+deit_like`."""
    name = data.get("model") or (cfg.get("model") or {}).get("name") or "?"
    profile = outlier_profile(cfg)
    return f"{name}+{profile}" if profile else name


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
        "calib_seconds": data.get("calib_seconds"), "num_test": data.get("num_test"),
        "duplicate_of": data.get("duplicate_of"), "error": data.get("error"),
        "HG": hg, "schema_version": schema_version(data), "config": _flatten(cfg), "settings": settings,
    }


# Columns of the records table that are the report's own working data, not written to runs.csv.
INTERNAL_COLUMNS = ("HG", "schema_version", "config", "settings")


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
    rows, unreadable = [], []
    for path, root in find_results(paths):
        data, problem = load_results_file(path, range(1, RESULTS_SCHEMA_VERSION + 1))
        if data is None:
            unreadable.append({"file": str(path), "reason": problem})
            continue
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
               for b in AXIS_KEYS + REPLICATE_KEYS + BOOKKEEPING_KEYS)


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
    """One setting in a column label: `n=128`, `g=kl_self`, `official`, else `leaf=value`."""
    if _is_missing(value):
        return ""  # e.g. the gradient source of a metric that reads none
    fmt = SETTING_FORMATS.get(key, key.rsplit(".", 1)[-1] + "={}")
    return fmt.format(value)


@functools.cache
def preset_defaults(quantizer: str) -> dict:
    """The flattened default config of a quantizer preset (conf/), or {} when it does not compose."""
    try:
        from omegaconf import OmegaConf

        from ptq.cli import compose_config

        cfg = compose_config([f"quantizer={quantizer}", "logger=none"])
        return _flatten(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    except Exception:  # noqa: BLE001 - an unknown or broken preset only loses the default-first order
        return {}


def setting_value_order(quantizer: str, key: str, value) -> tuple:
    """Values of one setting: the preset's default first, then numbers numerically, then text."""
    if _is_missing(value):
        return (0, 0, "")
    default = preset_defaults(str(quantizer)).get(key)
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
        labels.append(" ".join(filter(None, (setting_text(k, v) for k, v in zip(keys, values)))))
        orders.append(tuple(setting_value_order(r["quantizer"], k, v) for k, v in zip(keys, values)))
    runs["setting"], runs["setting_order"] = labels, orders
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Cells


def _stats(values) -> tuple[float, float, int]:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan"), 0
    s = pd.Series(v)
    return float(s.mean()), float(s.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt_cell(mean: float, std: float, n: int, ref: float | None = None, digits: int = 2) -> str:
    if n == 0 or mean != mean:
        text = ""
    else:
        text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")
    if ref is not None and ref == ref:
        text = f"{text} [{ref:.{digits}f}]".strip()
    return text


def mixed_settings(group: pd.DataFrame) -> list[str]:
    """Settings (other than axes, seeds and bookkeeping) on which the runs of one cell still differ: a setting
    that some of them lack (older files), since one that they all carry with several values is a split."""
    if len(group) < 2:
        return []
    keys = set().union(*(s.keys() for s in group["settings"]))
    return [k for k in sorted(keys) if not _is_axis_or_bookkeeping(k)
            and len({_value_id(s.get(k)) for s in group["settings"]}) > 1]


def _fp32_of(ok: pd.DataFrame, model: str) -> tuple[float, float, int]:
    """FP32 top-1 of a model: its fp32 runs, else the distinct top1_fp32 values the runs record (the same float
    evaluation repeated by every job counts once)."""
    rows = ok[ok["model"] == model]
    fp = rows[~rows["enabled"]]
    return _stats(fp["top1"]) if len(fp) else _stats(rows["top1_fp32"].dropna().unique())


def model_order(models) -> list[str]:
    """Other models (the test-bed) first, ViT before DeiT before Swin, then the paper's models in its order; a
    model's stressed variants (`name+profile`) follow it, mildest first."""
    from ptq.models.outliers import PROFILES
    from ptq.reference_results import TABLE1

    paper = list(TABLE1)

    def key(m):
        name, _, profile = str(m).partition("+")
        base = base_model_name(name)
        profile = profile or "none"
        stress = (PROFILES.index(profile) if profile in PROFILES else len(PROFILES), profile)
        if base in paper:
            return (1, paper.index(base), name, stress)
        family = 1 if "deit" in base else 2 if "swin" in base else 0 if "vit" in base else 3
        return (0, family, name, stress)

    return sorted(set(models), key=key)


def _bits_key(bits: str) -> tuple:
    if bits == "—":
        return (0, 0)
    w, a = bits[1:].split("A")
    return (-int(w), -int(a))


def _method_key(method: str) -> tuple:
    """The float model, then the named presets in METHOD_LABELS order, then any other by name."""
    order = list(METHOD_LABELS.values())
    return (order.index(method) if method in order else len(order), method)


class Table:
    """A display table (strings) plus the numbers behind every cell (`cells`, one row per cell)."""

    def __init__(self, title: str, display: pd.DataFrame, cells: pd.DataFrame, notes: list[str]):
        self.title, self.display, self.cells, self.notes = title, display, cells, notes

    def markdown(self) -> str:
        body = self.display.to_markdown(index=False, disable_numparse=True)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"### {self.title}\n\n{body}\n{notes}\n" if notes else f"### {self.title}\n\n{body}\n"

    def latex(self) -> str:
        tex = self.display.to_latex(index=False, escape=True, caption=self.title)
        return tex.replace("±", r"$\pm$").replace("✓", r"\checkmark").replace("—", "--")


def _cell_rows(ok: pd.DataFrame, keys: list[str], ref_fn) -> tuple[pd.DataFrame, list[str]]:
    """Aggregate `ok` by `keys`: mean/std/n of top-1 and of the drop, the reference, and mixing warnings."""
    rows, notes = [], []
    for key, group in ok.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        entry = dict(zip(keys, key))
        entry["mean"], entry["std"], entry["n"] = _stats(group["top1"])
        entry["drop_mean"], entry["drop_std"], _ = _stats(group["drop"])
        entry["fp32"] = _stats(group["top1_fp32"])[0]
        entry["ref"] = ref_fn(entry)
        rows.append(entry)
        differ = mixed_settings(group)
        if differ:
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
            notes.append(f"cell {label} aggregates {len(group)} runs that differ in {', '.join(differ)}")
    return pd.DataFrame(rows), notes


def _cell_text(cells: pd.DataFrame, column: str, drop: bool, ref: float | None = None) -> str:
    """The formatted cell of `column` among `cells` (already narrowed to one row of the table); only the
    reference `ref`, if any, where there is no run."""
    hit = cells[cells["column"] == column]
    if not len(hit):
        return fmt_cell(float("nan"), float("nan"), 0, ref)
    e = hit.iloc[0]
    return (fmt_cell(e["drop_mean"], e["drop_std"], e["n"], e["ref"]) if drop
            else fmt_cell(e["mean"], e["std"], e["n"], e["ref"]))


# ---------------------------------------------------------------------------------------------------------------
# Layouts


def _sorted_columns(cells: pd.DataFrame, orders: dict, lead=None) -> list[str]:
    """Column labels in table order: `lead(cell)` first (e.g. the model), then method, bits, setting values."""
    first = cells.drop_duplicates("column")
    keys = []
    for _, e in first.iterrows():
        keys.append(((lead(e),) if lead else ()) + (_method_key(e["method"]), _bits_key(e["bits"]),
                                                      orders[(e["method"], e.get("setting", ""))], e["column"]))
    return [k[-1] for k in sorted(keys)]


def _label_runs(q: pd.DataFrame, within: list[str]) -> tuple[pd.DataFrame, dict]:
    """Runs with their `setting` label (settings varying within method × `within`) and the label sort keys."""
    q = add_setting_labels(q, varying_settings(q, within))
    orders = {(m, s): o for m, s, o in zip(q["method"], q["setting"], q["setting_order"])}
    return q, orders


def main_table(df: pd.DataFrame, drop: bool = False) -> Table:
    """Rows = models; columns = FP32, then method × bits (× settings that vary within a method)."""
    ok = usable(df)
    q, orders = _label_runs(ok[ok["enabled"].astype(bool)], ["model"])
    q["column"] = [" ".join(filter(None, (r["method"], r["bits"], r["setting"]))) for _, r in q.iterrows()]

    def ref(e):
        if e["setting"]:
            return None
        r = table1_reference(e["model"], e["method"], e["bits"])
        if r is not None and drop:
            fp = table1_reference(e["model"], "FP32")
            return None if fp is None else fp - r
        return r

    cells, notes = _cell_rows(q, ["model", "method", "bits", "setting", "column"], ref)
    models = model_order(ok["model"])
    columns = _sorted_columns(cells, orders) if len(cells) else []
    about = {r["column"]: r for _, r in cells.iterrows()} if len(cells) else {}
    table = []
    fp_rows = []  # the FP32 column's numbers, for cells.csv
    for model in models:
        fm, fs, fn = _fp32_of(ok, model)
        row = {"model": model}
        if not drop:
            row["FP32"] = fmt_cell(fm, fs, fn, table1_reference(model, "FP32"))
        fp_rows.append({"model": model, "column": "FP32", "method": "FP32", "bits": "—", "setting": "",
                        "mean": fm, "std": fs, "n": fn, "drop_mean": 0.0, "drop_std": 0.0, "fp32": fm,
                        "ref": table1_reference(model, "FP32")})
        mine = cells[cells["model"] == model] if len(cells) else cells
        row.update({col: _cell_text(mine, col, drop, ref(dict(about[col], model=model))) for col in columns})
        table.append(row)
    display = pd.DataFrame(table, columns=["model"] + ([] if drop else ["FP32"]) + columns)
    all_cells = pd.concat([pd.DataFrame(fp_rows), cells], ignore_index=True) if len(fp_rows) else cells
    title = "Top-1 drop against FP32 (points)" if drop else "Top-1 (%)"
    return Table(title, display, all_cells, notes)


def _grid_table(df: pd.DataFrame, row_keys: list[str], row_order, row_cells, ref_fn, drop: bool, title: str
                ) -> Table:
    """Rows from `row_keys` (ordered by `row_order`), columns = model × bits (+ method when several, + the
    settings that still vary within a row)."""
    ok = usable(df)
    q, orders = _label_runs(ok[ok["enabled"].astype(bool)], ["model"] + row_keys)
    several = q["method"].nunique() > 1
    q["column"] = [(f"{r['method']} " if several else "") + f"{r['model']} {r['bits']}"
                   + (f" {r['setting']}" if r["setting"] else "") for _, r in q.iterrows()]
    split = q["setting"].astype(bool).any()  # cells.csv gets a setting column only when there is a split
    keys = row_keys + ["model", "method", "bits"] + (["setting"] if split else []) + ["column"]

    def ref(e):
        return None if e.get("setting") else ref_fn(e)

    cells, notes = _cell_rows(q, keys, ref)
    if not len(cells):
        return Table(title, pd.DataFrame(columns=row_keys), cells, notes)
    models = model_order(q["model"])
    columns = _sorted_columns(cells, orders, lead=lambda e: models.index(e["model"]))
    about = {r["column"]: r for _, r in cells.drop_duplicates("column").iterrows()}
    row_of = [tuple(r[k] for k in row_keys) for _, r in cells.iterrows()]
    cells = cells.iloc[sorted(range(len(cells)), key=lambda i: row_order(row_of[i]))].reset_index(drop=True)
    row_index = sorted(set(row_of), key=row_order)
    table = []
    for idx in row_index:
        row = row_cells(idx)
        hit_rows = cells
        for k, v in zip(row_keys, idx):
            hit_rows = hit_rows[hit_rows[k].astype(str) == str(v)]
        row.update({col: _cell_text(hit_rows, col, drop, ref(dict(about[col], **dict(zip(row_keys, idx)))))
                    for col in columns})
        table.append(row)
    fp = ", ".join(f"{m} {fmt_cell(*_fp32_of(ok, m), table1_reference(m, 'FP32'))}"
                   for m in model_order(q["model"]))
    notes = [f"FP32: {fp}"] + notes
    display = pd.DataFrame(table)
    return Table(title, display, cells, notes)


def ablation_row_key(flags) -> tuple:
    """The spec's ablation rows first, in its order, then any other (HG, ST, GT) combination."""
    flags = tuple(bool(f) for f in flags)
    spec = list(ABLATION_ROWS)
    return (spec.index(flags) if flags in spec else len(spec), flags)


def metric_order() -> list[str]:
    """The registered metrics (ptq.metrics.METRICS), those that read a gradient source last."""
    from ptq.metrics import METRICS, NEEDS_GRAD

    return [m for m in METRICS if m not in NEEDS_GRAD] + [m for m in METRICS if m in NEEDS_GRAD]


def metric_row_key(row) -> tuple:
    """(metric, grad) rows: metrics in `metric_order()`, gradient sources in their registry order."""
    from ptq.quant.gradients import GRAD_SOURCES

    metric, grad = row
    metrics = metric_order()
    return (metrics.index(metric) if metric in metrics else len(metrics), str(metric),
            GRAD_SOURCES.index(grad) if grad in GRAD_SOURCES else -1, str(grad))


def ablation_table(df: pd.DataFrame, drop: bool = False) -> Table:
    """The spec's ablation layout: HG / ST / GT switches as rows (spec order, then any other combination)."""
    ok = df.copy()
    ok["HG"] = ok["HG"].fillna(False).astype(bool)
    ok["ST"] = ok["twin_softmax"].fillna(False).astype(bool)
    ok["GT"] = ok["twin_gelu"].fillna(False).astype(bool)

    def ref(e):
        flags = (bool(e["HG"]), bool(e["ST"]), bool(e["GT"]))
        r = ablation_reference(e["model"], flags, e["bits"])
        if r is not None and drop:
            fp = table1_reference(e["model"], "FP32")
            return None if fp is None else fp - r
        return r

    def row_cells(idx):
        return {k: MARK if v else "" for k, v in zip(("HG", "ST", "GT"), idx)}

    title = "Ablation: top-1 drop against FP32 (points)" if drop else "Ablation: top-1 (%)"
    table = _grid_table(ok, ["HG", "ST", "GT"], ablation_row_key, row_cells, ref, drop, title)
    table.notes.insert(0, "HG = Hessian-guided metric (else cosine), ST = twin uniform post-softmax, "
                          "GT = twin uniform post-GELU")
    return table


def metrics_table(df: pd.DataFrame, drop: bool = False) -> Table:
    """Rows = metric (split by gradient source where the metric reads one), columns = model × bits."""
    ok = df.copy()
    ok["grad"] = ok["grad"].fillna("—")

    def row_cells(idx):
        return {"metric": idx[0], "grad": idx[1]}

    title = "Metrics: top-1 drop against FP32 (points)" if drop else "Metrics: top-1 (%)"
    table = _grid_table(ok, ["metric", "grad"], metric_row_key, row_cells, lambda e: None, drop, title)
    table.notes.insert(0, "grad = source of the Hessian metric's gradient (only `hessian` reads it)")
    return table


def pick_layout(df: pd.DataFrame) -> str:
    """ablation when a twin switch varies within a method on a model, metrics when the only settings that vary
    are the metric's, else main."""
    q = usable(df)
    q = q[q["enabled"].astype(bool)]
    if not len(q):
        return "main"
    within = q.groupby(["method", "model"], dropna=False)[["twin_softmax", "twin_gelu"]].nunique(dropna=True)
    if (within > 1).any().any():
        return "ablation"
    keys = {k for keys in varying_settings(q, ["model"]).values() for k in keys}
    if keys and all(k.startswith("metric.") for k in keys):
        return "metrics"
    return "main"


LAYOUT_FUNCTIONS = {"main": main_table, "ablation": ablation_table, "metrics": metrics_table}


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    return pd.DataFrame({"job": bad["path"], "model": bad["model"], "method": bad["method"], "bits": bad["bits"],
                         "error": bad["error"].fillna("").map(lambda e: " ".join(str(e).split())[:200])})


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure of the notebooks as PNG (folders created); the figure stays open for display."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def line_colours(keys) -> dict:
    """One matplotlib colour (C0..C9, cycling) per distinct key, in sorted order: a method keeps its colour in every
    panel of a figure even where some of the methods are missing."""
    return {key: f"C{i % 10}" for i, key in enumerate(sorted(set(keys)))}


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per job with the numbers the notebooks plot (no nested config or settings)."""
    return df.drop(columns=list(INTERNAL_COLUMNS))


# ---------------------------------------------------------------------------------------------------------------
# Report


def build_report(paths, layout: str = "auto") -> dict:
    """Everything `ptq.report` writes: {"layout", "table", "drop", "failed", "unreadable", "records"}."""
    rows, unreadable = read_results(paths)
    df = _records_frame(rows)
    if layout == "auto":
        layout = pick_layout(df)
    fn = LAYOUT_FUNCTIONS[layout]
    return {"layout": layout, "table": fn(df), "drop": fn(df, drop=True), "failed": failed_table(df),
            "unreadable": pd.DataFrame(unreadable, columns=["file", "reason"]), "records": df}


def report_markdown(rep: dict, sources) -> str:
    df = rep["records"]
    n_ok = int((df["status"] == "ok").sum())
    n_dup = int(df["duplicate_of"].notna().sum())
    n_bad = len(rep.get("unreadable", ()))
    head = (f"Sweep: {', '.join(map(str, sources))} — {len(df)} jobs: {n_ok} ok"
            + (f" ({n_dup} reusing a sibling's results)" if n_dup else "")
            + f", {len(rep['failed'])} failed" + (f", {n_bad} unreadable files skipped" if n_bad else "")
            + ". Cells: mean ± std over runs when n > 1; [x] = reference (SPEC.md section 6, ImageNet).")
    parts = [head, "", rep["table"].markdown(), rep["drop"].markdown()]
    if len(rep["failed"]):
        parts += ["### Failed jobs", "", rep["failed"].to_markdown(index=False), ""]
    if n_bad:
        parts += ["### Unreadable results files (skipped)", "", rep["unreadable"].to_markdown(index=False), ""]
    return "\n".join(parts)


def write_report(rep: dict, out: Path, formats=FORMATS, sources=()) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("table", "drop"):
        t = rep[name]
        if "md" in formats:
            written.append(out / f"{name}.md")
            written[-1].write_text(t.markdown() if name == "drop" else report_markdown(rep, sources))
        if "csv" in formats:
            written.append(out / f"{name}.csv")
            t.display.to_csv(written[-1], index=False)
        if "tex" in formats:
            written.append(out / f"{name}.tex")
            written[-1].write_text(t.latex())
    if "csv" in formats:
        written.append(out / "cells.csv")
        rep["table"].cells.to_csv(written[-1], index=False)
        written.append(out / "runs.csv")
        runs_table(rep["records"]).to_csv(written[-1], index=False)
        for name in ("failed", "unreadable"):
            if len(rep.get(name, ())):
                written.append(out / f"{name}.csv")
                rep[name].to_csv(written[-1], index=False)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ptq.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR", help="sweep folders (searched recursively)")
    p.add_argument("--out", type=Path, default=None, help="write table/drop .md/.csv/.tex, cells.csv, runs.csv")
    p.add_argument("--format", default=",".join(FORMATS), help="comma-separated subset of md,csv,tex")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
    p.add_argument("--wandb", action="store_true",
                   help="also log the tables to the sweep's W&B group (mode from WANDB_MODE, default offline)")
    p.add_argument("--wandb-group", default=None, help="W&B group (default: the first sweep folder's name)")
    args = p.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        print(f"error: unknown format {', '.join(bad)}; valid: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        rep = build_report(args.sweeps, args.layout)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not len(rep["records"]):
        skipped = f" ({len(rep['unreadable'])} unreadable)" if len(rep["unreadable"]) else ""
        print(f"error: no readable {RESULTS_FILE} under {', '.join(args.sweeps)}{skipped}", file=sys.stderr)
        return 2
    print(report_markdown(rep, args.sweeps))
    if args.out is not None:
        for path in write_report(rep, args.out, formats, args.sweeps):
            print(f"wrote {path}")
    if args.wandb:
        from ptq.loggers.wandb_report import log_report

        where = log_report(rep, args.sweeps, group=args.wandb_group, out=args.out)
        print(f"W&B: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
