"""The paper-layout tables of a report from the runs frame (ptq/report/data.py): cells (mean ± std over repeats,
n, intervals), the main / ablation / metrics layouts, the settings table, runs.csv and `build_report`, which returns
every table as one mapping (`rep["tables"]`) for the renderers and the W&B upload."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ptq.reference_results import ABLATION_ROWS, ablation_reference, base_model_name, table1_reference
from ptq.report.data import (
    COMP_LABELS,
    COMPENSATION_COLUMNS,
    INTERNAL_COLUMNS,
    MARK,
    METHOD_LABELS,
    OFF,
    RECON_LABELS,
    _is_axis_or_bookkeeping,
    _is_missing,
    _records_frame,
    _value_id,
    add_setting_labels,
    compensated,
    read_results,
    usable,
    varying_settings,
)

# ---------------------------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class Measure:
    """A number the report tabulates per cell: the records column it averages, the `<prefix>mean` /
    `<prefix>std` columns of cells.csv, and how its tables read. A new measure table is one line in MEASURES."""

    column: str                      # column of the records table (results.json field)
    prefix: str                      # cells.csv columns <prefix>mean, <prefix>std
    title: str                       # table title
    digits: int = 2
    fp32_column: bool = False        # the main layout shows the FP32 column first
    reference: bool = False          # published numbers in brackets (ptq/reference_results.py)


# report key -> measure; each is a table of its own (table.md holds them all, `<key>.md/csv/tex` each one).
MEASURES = {
    "table": Measure("top1", "", "Top-1 (%)", 2, fp32_column=True, reference=True),
    "drop": Measure("drop", "drop_", "Top-1 drop against FP32 (points)", 2, reference=True),
    "agreement": Measure("agreement", "agreement_", "Agreement with FP32's predictions (%)", 2),
    "kl": Measure("kl_fp32", "kl_", "KL(FP32 ‖ quantized) per test image (nats)", 4),
}
DAGGER = "†"  # a cell of one run (n = 1): no spread to show


def _stats(values) -> tuple[float, float, int]:
    """(mean, sample std (ddof=1), n) of the values present; std is NaN for one value (no spread measured)."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan"), 0
    s = pd.Series(v)
    return float(s.mean()), float(s.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt_cell(mean: float, std: float, n: int, ref: float | None = None, digits: int = 2, mark: bool = True,
             usual_n: int | None = None) -> str:
    """`mean ± std` over n > 1 runs; one run (n = 1) shows its number with a dagger (`mark`), never `± 0.00`; a
    cell whose n is not the table's usual n says its n; `[ref]` = the published number."""
    if n == 0 or mean != mean:
        text = ""
    elif n > 1:
        text = f"{mean:.{digits}f} ± {std:.{digits}f}" + (f" (n = {n})" if usual_n and n != usual_n else "")
    else:
        text = f"{mean:.{digits}f}" + (DAGGER if mark else "")
    if ref is not None and ref == ref:
        text = f"{text} [{ref:.{digits}f}]".strip()
    return text


def cell_interval(mean: float, std: float, n: int, num_test) -> tuple[float, float, str]:
    """The 95 % interval of a top-1 cell (ptq/intervals.py): Student's t over the runs when n > 1, Wilson's
    binomial interval on the cell's `num_test` test images when n = 1; (low, high, which)."""
    from ptq.intervals import t_interval, wilson_interval

    if n > 1:
        return (*t_interval(mean, std, n), "t")
    if n == 1 and not _is_missing(num_test):
        return (*wilson_interval(mean, int(num_test)), "wilson")
    return float("nan"), float("nan"), ""


def _test_images(group: pd.DataFrame):
    """The runs' number of test images: one value, else NaN (mixed or not recorded)."""
    values = group["num_test"].dropna().unique()
    return int(values[0]) if len(values) == 1 else float("nan")


def cell_numbers(group: pd.DataFrame, top1=None) -> dict:
    """Every number of one cell of cells.csv from its runs: each measure's mean / std, n, N test images and the
    top-1's 95 % interval. `top1`: the values to use for top-1 (default the runs' top1)."""
    entry = {}
    for m in MEASURES.values():
        values = group[m.column] if top1 is None or m.column != "top1" else top1
        entry[f"{m.prefix}mean"], entry[f"{m.prefix}std"], n = _stats(values)
        if m.column == "top1":
            entry["n"] = n
    entry["num_test"] = _test_images(group)
    entry["ci95_low"], entry["ci95_high"], entry["ci95"] = cell_interval(entry["mean"], entry["std"], entry["n"],
                                                                         entry["num_test"])
    return entry


def mixed_settings(group: pd.DataFrame) -> list[str]:
    """Settings (other than axes, seeds and bookkeeping) on which the runs of one cell still differ: a setting
    that some of them lack (older files), since one that they all carry with several values is a split."""
    if len(group) < 2:
        return []
    keys = set().union(*(s.keys() for s in group["settings"]))
    return [k for k in sorted(keys) if not _is_axis_or_bookkeeping(k)
            and len({_value_id(s.get(k)) for s in group["settings"]}) > 1]


def _fp32_runs(ok: pd.DataFrame, model: str) -> tuple[pd.DataFrame, pd.Series]:
    """(runs, top-1 values) of a model's FP32 column: its fp32 runs, else the distinct top1_fp32 values the runs
    record (the same float evaluation repeated by every job counts once)."""
    rows = ok[ok["model"] == model]
    fp = rows[~rows["enabled"].astype(bool)]
    if len(fp):
        return fp, fp["top1"]
    return rows, pd.Series(rows["top1_fp32"].dropna().unique(), dtype=float)


def _fp32_of(ok: pd.DataFrame, model: str) -> tuple[float, float, int]:
    """FP32 top-1 of a model: (mean, std, n) (see `_fp32_runs`)."""
    return _stats(_fp32_runs(ok, model)[1])


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
    """A display table (strings) plus the numbers behind every cell (`cells`, one row per cell); `caption` says
    what a cell is (n runs, N test images), in the markdown under the table and in the LaTeX caption."""

    def __init__(self, title: str, display: pd.DataFrame, cells: pd.DataFrame, notes: list[str], caption: str = ""):
        self.title, self.display, self.cells, self.notes, self.caption = title, display, cells, notes, caption

    def markdown(self) -> str:
        body = self.display.to_markdown(index=False, disable_numparse=True)
        notes = "".join(f"\n- {n}" for n in ([self.caption] if self.caption else []) + self.notes)
        return f"### {self.title}\n\n{body}\n{notes}\n" if notes else f"### {self.title}\n\n{body}\n"

    def latex(self) -> str:
        caption = f"{self.title}. {self.caption}" if self.caption else self.title
        tex = self.display.to_latex(index=False, escape=True, caption=caption)
        return (tex.replace("±", r"$\pm$").replace("✓", r"\checkmark").replace("—", "--")
                .replace(DAGGER, r"$^\dagger$").replace("‖", r"$\|$"))


def usual_n(cells: pd.DataFrame) -> int | None:
    """The most common number of runs per quantized cell (ties: the larger), None without cells."""
    counts = cells[(cells["method"] != "FP32") & (cells["n"] > 0)]["n"].value_counts() if len(cells) else []
    return int(max(counts.index, key=lambda n: (counts[n], n))) if len(counts) else None


def sample_caption(cells: pd.DataFrame, measure: Measure) -> str:
    """What one cell is: n runs per cell (which cells differ), N test images per run, the 95 % intervals."""
    if not len(cells):
        return ""
    q = cells[(cells["method"] != "FP32") & (cells["n"] > 0)]
    n = usual_n(cells)
    ones = int((q["n"] == 1).sum())
    other = int(((q["n"] != n) & (q["n"] > 1)).sum())
    text = (f"n = {n} runs per cell (calibration seeds), mean ± sample std" if n and n > 1
            else f"n = 1 run per cell ({DAGGER}: no spread measured)")
    if n and n > 1 and ones:
        text += f"; {DAGGER} = one run (n = 1, {ones} cells): no spread measured, no ±"
    if other:
        text += f"; (n = k) = a cell with another number of runs ({other} cells)"
    sizes = sorted({int(v) for v in cells["num_test"].dropna()})
    if not sizes:
        text += ". Test images per run: not recorded"
    else:
        text += ". N = " + " / ".join(f"{v:,}" for v in sizes) + " test images per run"
        if len(sizes) > 1:
            text += " (differs between cells; per cell in cells.csv)"
        if measure.column == "top1":
            from ptq.intervals import wilson_interval

            p = float(q["mean"].median()) if len(q) else 50.0
            low, high = wilson_interval(p, sizes[0])
            text += (f": a top-1 near {p:.0f} % on {sizes[0]:,} images is known to ±{(high - low) / 2:.1f} points "
                     f"(95 % Wilson)")
    if measure.column == "top1":
        text += (". 95 % intervals in cells.csv (ci95_low, ci95_high; ci95 = t: Student's t over the runs, "
                 "wilson: Wilson's binomial interval on the N images, for n = 1)")
    return text + "."


def _cell_rows(ok: pd.DataFrame, keys: list[str], ref_fn) -> tuple[pd.DataFrame, list[str]]:
    """Aggregate `ok` by `keys`: every measure's mean/std, n, N, the 95 % interval, the reference, and mixing
    warnings."""
    rows, notes = [], []
    for key, group in ok.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        entry = dict(zip(keys, key))
        numbers = cell_numbers(group)
        entry.update({k: numbers.pop(k) for k in ("mean", "std", "n", "drop_mean", "drop_std")})
        entry["fp32"] = _stats(group["top1_fp32"])[0]
        entry["ref"] = ref_fn(entry)
        entry.update(numbers)
        rows.append(entry)
        differ = mixed_settings(group)
        if differ:
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
            notes.append(f"cell {label} aggregates {len(group)} runs that differ in {', '.join(differ)}")
    return pd.DataFrame(rows), notes


def _cell_text(cells: pd.DataFrame, column: str, measure: Measure, ref: float | None = None,
               usual: int | None = None) -> str:
    """The formatted cell of `column` among `cells` (already narrowed to one row of the table); only the
    reference `ref`, if any, where there is no run."""
    hit = cells[cells["column"] == column]
    if not len(hit):
        return fmt_cell(float("nan"), float("nan"), 0, ref, measure.digits)
    e = hit.iloc[0]
    return fmt_cell(e[f"{measure.prefix}mean"], e[f"{measure.prefix}std"], e["n"],
                    e["ref"] if measure.reference else None, measure.digits, usual_n=usual)


def _measure(drop: bool, measure: str | None) -> Measure:
    return MEASURES[measure or ("drop" if drop else "table")]


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


def main_table(df: pd.DataFrame, drop: bool = False, measure: str | None = None) -> Table:
    """Rows = models; columns = FP32, then method × bits (× settings that vary within a method). `measure`: a key
    of MEASURES (default top-1, or the drop with `drop`)."""
    m = _measure(drop, measure)
    drop = m.column == "drop"
    ok = usable(df)
    q, orders = _label_runs(ok[ok["enabled"].astype(bool)], ["model"])
    q["column"] = [" ".join(filter(None, (r["method"], r["bits"], r["setting"]))) for _, r in q.iterrows()]

    def ref(e):
        if e["setting"] or not m.reference:
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
    usual = usual_n(cells)
    table = []
    fp_rows = []  # the FP32 column's numbers, for cells.csv
    for model in models:
        fp = fp32_cell(ok, model)
        row = {"model": model}
        if m.fp32_column:  # one deterministic float evaluation: no dagger
            row["FP32"] = fmt_cell(fp["mean"], fp["std"], fp["n"], fp["ref"], m.digits, mark=False)
        fp_rows.append(fp)
        mine = cells[cells["model"] == model] if len(cells) else cells
        row.update({col: _cell_text(mine, col, m, ref(dict(about[col], model=model)), usual) for col in columns})
        table.append(row)
    display = pd.DataFrame(table, columns=["model"] + (["FP32"] if m.fp32_column else []) + columns)
    all_cells = pd.concat([pd.DataFrame(fp_rows), cells], ignore_index=True) if len(fp_rows) else cells
    return Table(m.title, display, all_cells, notes, sample_caption(cells, m))


def fp32_cell(ok: pd.DataFrame, model: str) -> dict:
    """The FP32 column's cell of a model for cells.csv (its drop is 0 by definition; agreement and KL only from
    fp32 runs)."""
    runs, top1 = _fp32_runs(ok, model)
    numbers = cell_numbers(runs, top1=top1)
    if runs["enabled"].astype(bool).any():  # no fp32 run: the quantized runs' other numbers are not FP32's
        numbers.update({f"{m.prefix}{s}": float("nan") for m in MEASURES.values() if m.column != "top1"
                        for s in ("mean", "std")})
    cell = {"model": model, "column": "FP32", "method": "FP32", "bits": "—", "setting": "",
            **{k: numbers.pop(k) for k in ("mean", "std", "n")}}
    cell.update(drop_mean=0.0, drop_std=float("nan"), fp32=cell["mean"], ref=table1_reference(model, "FP32"))
    numbers.pop("drop_mean"), numbers.pop("drop_std")
    return {**cell, **numbers}


def _grid_table(df: pd.DataFrame, row_keys: list[str], row_order, row_cells, ref_fn, m: Measure, title: str
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
        return None if e.get("setting") or not m.reference else ref_fn(e)

    cells, notes = _cell_rows(q, keys, ref)
    if not len(cells):
        return Table(title, pd.DataFrame(columns=row_keys), cells, notes)
    models = model_order(q["model"])
    columns = _sorted_columns(cells, orders, lead=lambda e: models.index(e["model"]))
    about = {r["column"]: r for _, r in cells.drop_duplicates("column").iterrows()}
    row_of = [tuple(r[k] for k in row_keys) for _, r in cells.iterrows()]
    cells = cells.iloc[sorted(range(len(cells)), key=lambda i: row_order(row_of[i]))].reset_index(drop=True)
    row_index = sorted(set(row_of), key=row_order)
    usual = usual_n(cells)
    table = []
    for idx in row_index:
        row = row_cells(idx)
        hit_rows = cells
        for k, v in zip(row_keys, idx):
            hit_rows = hit_rows[hit_rows[k].astype(str) == str(v)]
        row.update({col: _cell_text(hit_rows, col, m, ref(dict(about[col], **dict(zip(row_keys, idx)))), usual)
                    for col in columns})
        table.append(row)
    if m.fp32_column:
        fp = ", ".join(f"{model} {fmt_cell(*_fp32_of(ok, model), table1_reference(model, 'FP32'), mark=False)}"
                       for model in model_order(q["model"]))
        notes = [f"FP32: {fp}"] + notes
    display = pd.DataFrame(table)
    return Table(title, display, cells, notes, sample_caption(cells, m))


def _grid_title(layout: str, m: Measure) -> str:
    """`Ablation: top-1 (%)`: the layout's name, then the measure's title (first letter lower unless an acronym)."""
    title = m.title if m.title[:2].isupper() else m.title[0].lower() + m.title[1:]
    return f"{layout}: {title}"


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


def ablation_table(df: pd.DataFrame, drop: bool = False, measure: str | None = None) -> Table:
    """The spec's ablation layout: HG / ST / GT switches as rows (spec order, then any other combination)."""
    m = _measure(drop, measure)
    drop = m.column == "drop"
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

    table = _grid_table(ok, ["HG", "ST", "GT"], ablation_row_key, row_cells, ref, m, _grid_title("Ablation", m))
    table.notes.insert(0, "HG = Hessian-guided metric (else cosine), ST = twin uniform post-softmax, "
                          "GT = twin uniform post-GELU")
    return table


def metrics_table(df: pd.DataFrame, drop: bool = False, measure: str | None = None) -> Table:
    """Rows = metric (split by gradient source where the metric reads one), columns = model × bits."""
    m = _measure(drop, measure)
    ok = df.copy()
    ok["grad"] = ok["grad"].fillna("—")

    def row_cells(idx):
        return {"metric": idx[0], "grad": idx[1]}

    table = _grid_table(ok, ["metric", "grad"], metric_row_key, row_cells, lambda e: None, m,
                        _grid_title("Metrics", m))
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


# ---------------------------------------------------------------------------------------------------------------
# Settings table: what each column was run with, in the words papers use


def slot_text(slots: dict, name: str) -> str:
    """A resolved slot: `uniform channel 4-bit`, `float`, or `= weight (4-bit)` where the slot is off and its
    operands use the parent slot's quantizer (e.g. head_weight off: the head's weight is quantized like every
    other weight, at bits.w), `?` where the run's slots are unknown."""
    spec = slots.get(name)
    if not spec:
        return "?"
    if spec.get("quantizer") is None:
        return "float"
    if spec.get("slot", name) != name:
        return f"= {spec['slot']} ({spec['bits']}-bit)"
    return f"{spec['quantizer']} {spec['granularity']} {spec['bits']}-bit"


def _setting(r, key: str, default="?"):
    value = r["settings"].get(key, r["config"].get(key))
    return default if _is_missing(value) else value


def recon_text(r) -> str:
    name = _setting(r, "recon.name", "none")
    mlp = r.get("top1_fp32_mlp")   # MLP reconstruction changed the float model: both float top-1 (ptq/recon/mlp.py)
    mlp = "" if _is_missing(mlp) else f" + MLP recon (fp32 {r['top1_fp32']:.2f} -> {mlp:.2f})"
    if name == "none":
        return "none" + mlp
    return f"{RECON_LABELS.get(str(name), str(name))}: {_setting(r, 'recon.iters')} it, " \
           f"{_setting(r, 'recon.n_images')} img" + mlp


def first_last_text(r) -> str:
    bits = _setting(r, "bits.first_last", OFF)
    return "off (as the slots say)" if bits == OFF else f"{bits}-bit"


def compensation_text(r) -> str:
    """The compensation stage of a run as its results.json recorded it: `QwT paper: 512 img (none), ridge 0.001,
    solve64, fp16 side path`, `ERQ official: 32 img, float inputs, coe 20000.0, inverse32`, `none`."""
    name = _setting(r, "compensate.name", "none")
    if name == "none":
        return "none"
    comp = r["compensation_record"] if isinstance(r["compensation_record"], dict) else {}
    head = f"{COMP_LABELS.get(str(name), str(name))} {comp.get('compat', _setting(r, 'compensate.compat'))}"
    if not comp:
        return f"{head}: not recorded"
    if comp.get("layers") is not None:   # ERQ edits the layers' weights, no side path
        return f"{head}: {comp.get('images')} img, {comp.get('inputs')} inputs, coe {comp.get('coe')}, " \
               f"{comp.get('solver')}"
    return f"{head}: {comp.get('images')} img ({comp.get('augmentation')}), ridge {comp.get('ridge')}, " \
           f"{comp.get('solver')}, {comp.get('precision')} side path"


def maps_kept_text(r) -> str:
    """`3 of 4` maps kept (QwT, QwT-v2), `18 layers edited` (ERQ), `—` without compensation."""
    comp = r["compensation_record"]
    if not isinstance(comp, dict):
        return "—"
    if comp.get("layers") is not None:
        return f"{len(comp['layers'])} layers edited"
    return f"{comp.get('kept')} of {len(comp.get('blocks') or [])}"


def _count(value) -> str:
    return "0" if _is_missing(value) else f"{int(value):,}"


# Settings-table columns of the compensation stage (ptq/compensate/), shown only where some run recorded one: its
# form and images, the maps kept, and its cost (parameters and MACs per image added, per run; seconds: mean over
# the column's runs, in `settings_table`).
COMPENSATION_SETTINGS = {
    "compensation": compensation_text,
    "maps kept": maps_kept_text,
    "params added": lambda r: _count(r["added_params"]),
    "MACs/image added": lambda r: _count(r["added_macs_per_image"]),
}
COMPENSATION_SECONDS = "compensation s"

# Settings-table column -> its text for one run (a records row). Papers disagree on these and they move W4A4 by
# points; a new column is one line here.
SETTINGS_COLUMNS = {
    "weights": lambda r: slot_text(r["slots"], "weight"),
    "activations": lambda r: slot_text(r["slots"], "input"),
    "post-LN inputs": lambda r: slot_text(r["slots"], "ln_input"),
    "post-softmax": lambda r: slot_text(r["slots"], "softmax"),
    "patch-embed weight": lambda r: slot_text(r["slots"], "conv_weight"),
    "image": lambda r: slot_text(r["slots"], "image"),
    "head weight": lambda r: slot_text(r["slots"], "head_weight"),
    "head input": lambda r: slot_text(r["slots"], "head_input"),
    "first/last": first_last_text,
    "calibration": lambda r: f"{_setting(r, 'calib.n_images')} img, {_setting(r, 'calib.transform', 'eval')} "
                             "transform",
    "reconstruction": recon_text,
    "deployable": lambda r: "?" if _is_missing(r["deployable"]) else "yes" if r["deployable"] else
                            f"no ({r['simulation_only']})",
}


def settings_table(df: pd.DataFrame) -> Table:
    """One row per method × bits × split of the tables (the main layout's column labels): every setting of
    SETTINGS_COLUMNS, the distinct values among its runs joined by ` / ` (e.g. two models that differ)."""
    ok = usable(df)
    q, _ = _label_runs(ok[ok["enabled"].astype(bool)], ["model"])
    title = "Settings of each column (resolved operand slots of the runs)"
    # deployable (ptq/export): only where a run recorded it, so tables of older runs regenerate unchanged
    names = [n for n in SETTINGS_COLUMNS if n != "deployable" or (len(q) and q["deployable"].notna().any())]
    columns = {**SETTINGS_COLUMNS, **(COMPENSATION_SETTINGS if compensated(q) else {})}
    names += [n for n in columns if n not in SETTINGS_COLUMNS]
    if compensated(q):
        names.append(COMPENSATION_SECONDS)
    if not len(q):
        return Table(title, pd.DataFrame(columns=["column", *names]), pd.DataFrame(), [])
    q["column"] = [" ".join(filter(None, (r["method"], r["bits"], r["setting"]))) for _, r in q.iterrows()]
    rows = []
    for column in _sorted_columns(q.drop_duplicates("column"), {(m, s): o for m, s, o in
                                                                zip(q["method"], q["setting"], q["setting_order"])}):
        runs = q[q["column"] == column]
        row = {"column": column, "models": ", ".join(model_order(runs["model"])), "runs": str(len(runs))}
        for name in names:
            if name == COMPENSATION_SECONDS:   # a cost: mean ± std over the column's runs; none: 0
                seconds = runs["compensate_seconds"]
                row[name] = fmt_cell(*_stats(seconds), digits=1, mark=False) if seconds.notna().any() else "0"
            else:
                row[name] = " / ".join(dict.fromkeys(columns[name](r) for _, r in runs.iterrows()))
        rows.append(row)
    notes = ["`= weight (4-bit)`: the slot is off, its operands are quantized like the parent slot's (the "
             "classifier head's weight like every other weight); `float`: not quantized; first/last: "
             "bits.first_last (ptq/quant/first_last.py: conv_weight, image, head_weight, head_input)"]
    if compensated(q):
        notes.append("compensation (ptq/compensate/): its form, images (augmentation), ridge, solver and side-path "
                     "precision as results.json recorded them; maps kept of the blocks (ERQ: layers edited); params "
                     "and MACs per image added at inference by the kept maps (each run's value, ` / ` where the "
                     "runs differ); compensation s: the stage's seconds, mean ± std over the column's runs")
    return Table(title, pd.DataFrame(rows), pd.DataFrame(), notes)


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    return pd.DataFrame({"job": bad["path"], "model": bad["model"], "method": bad["method"], "bits": bad["bits"],
                         "error": bad["error"].fillna("").map(lambda e: " ".join(str(e).split())[:200])})


# runs.csv columns that only results written by newer code hold: left out of a report none of whose runs has them,
# so tables of older runs regenerate unchanged
RECENT_COLUMNS = ("deployable", "simulation_only")


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per job with the numbers the notebooks plot (no nested config or settings); the compensation
    columns only where some run recorded a compensation (a run without one adds 0 parameters, MACs and seconds)."""
    empty = [c for c in RECENT_COLUMNS if c in df and df[c].isna().all()]
    runs = df.drop(columns=list(INTERNAL_COLUMNS) + empty)
    if not compensated(df):
        return runs.drop(columns=list(COMPENSATION_COLUMNS))
    none = (runs["compensate"] == "none").to_numpy()
    for column in ("added_params", "added_macs_per_image", "compensate_seconds"):
        runs.loc[none, column] = runs.loc[none, column].fillna(0)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Report


# The tables ptq.report writes, in the order of table.md: every measure (MEASURES), then the settings table.
TABLES = (*MEASURES, "settings")
OPTIONAL_TABLES = ("failed", "unreadable")  # written (csv) and uploaded (W&B) only when they have rows


def build_report(paths, layout: str = "auto") -> dict:
    """Everything `ptq.report` writes: {"layout", one Table per key of TABLES ("table" = top-1, "drop",
    "agreement", "kl", "settings"), "failed", "unreadable", "records", "tables"}; `tables` is every table of the
    report by name (each of TABLES, cells, runs, failed, unreadable -> DataFrame), what both consumers, the file
    writer (`write_report`) and the W&B upload (ptq/loggers/wandb_report.py), take."""
    rows, unreadable = read_results(paths)
    df = _records_frame(rows)
    if layout == "auto":
        layout = pick_layout(df)
    fn = LAYOUT_FUNCTIONS[layout]
    rep = {"layout": layout, **{key: fn(df, measure=key) for key in MEASURES}, "settings": settings_table(df)}
    rep.update(failed=failed_table(df), unreadable=pd.DataFrame(unreadable, columns=["file", "reason"]), records=df)
    rep["tables"] = {**{key: rep[key].display for key in TABLES}, "cells": rep["table"].cells,
                     "runs": runs_table(df), "failed": rep["failed"], "unreadable": rep["unreadable"]}
    return rep
