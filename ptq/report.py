"""Tables in the paper's layout from sweep folders: `python -m ptq.report SWEEP_DIR... [--out DIR] [--format ...]`.

Every results.json under the given folders (recursively) is one record. Records that are copies of a sibling job
(`duplicate_of`, see ptq/sweep.py) are left out of the numbers; failed jobs are listed separately. A cell with
several runs (seeds, repeated runs) shows mean ± std (sample std, ddof=1) over them.

Layouts (`--layout`, default auto):
- main: rows = models, columns = FP32 then method × bits (plus any setting that varies within a method, e.g.
  calib.n_images or quantizer.compat); the paper's table 1.
- ablation: rows = the HG / ST / GT switches (Hessian metric, softmax twin, GELU twin), columns = model × bits.
- metrics: rows = metric (and the Hessian's gradient source), columns = model × bits.
auto picks ablation when a twin switch varies within a method, metrics when the metric or the gradient source
does, else main.
Reference numbers (SPEC.md section 6, ptq/reference_results.py) appear in brackets beside ours for paper models.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from ptq.reference_results import ABLATION_ROWS, ablation_reference, base_model_name, table1_reference
from ptq.results_file import RESULTS_FILE, RESULTS_SCHEMA_VERSION, read_results

FORMATS = ("md", "csv", "tex")
LAYOUTS = ("auto", "main", "ablation", "metrics")
METHOD_LABELS = {"fp32": "FP32", "base_ptq": "BasePTQ", "ptq4vit": "PTQ4ViT"}
METRIC_ORDER = ("mse", "l1", "cosine", "pearson", "linear_weighted_l2", "square_weighted_l2", "hessian")
GRAD_ORDER = ("kl_self", "kl_quant", "pseudo_ce", "label_ce", "fisher")
# Settings that become part of a main-table column label when they vary within a method.
SETTING_KEYS = ("compat", "n_images", "mode", "metric", "grad", "twin_softmax", "twin_gelu")
# Config keys that may differ between the runs of one cell without a warning.
BENIGN_KEYS = ("seed", "calib.seed", "force", "progress", "threads", "device", "eval.batch_size", "logger.")
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


def bits_label(w, a) -> str:
    return f"W{w}A{a}" if w is not None and a is not None else "—"


def method_label(name) -> str:
    return METHOD_LABELS.get(str(name), str(name))


def record(path: Path, data: dict, root: Path | None = None) -> dict:
    """One row of the records table from a results.json (ok or failed)."""
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
    return {
        "path": name, "status": data.get("status", "?"),
        "model": data.get("model") or (cfg.get("model") or {}).get("name") or "?",
        "quantizer": quantizer, "method": method_label(quantizer), "enabled": enabled,
        "bits": bits_label(w, a) if enabled else "—", "w": w if enabled else None, "a": a if enabled else None,
        "metric": metric if enabled else None, "grad": grad if enabled and metric == "hessian" else None,
        "compat": data.get("compat") or pc.get("compat") or q.get("compat"),
        "n_images": pc.get("n_images", c.get("n_images")) if enabled else None,
        "calib_seed": pc.get("seed", c.get("seed")) if enabled else None,
        "mode": pc.get("mode", c.get("mode")) if enabled else None,
        "twin_softmax": bool(q.get("twin_softmax", pc.get("softmax_quantizer") == "twin_softmax")) if enabled
        else None,
        "twin_gelu": bool(q.get("twin_gelu", pc.get("gelu_quantizer") == "twin_gelu")) if enabled else None,
        "top1": top1, "top1_fp32": fp32, "drop": drop, "top5": data.get("top5"),
        "agreement": data.get("agreement"), "kl_fp32": data.get("kl_fp32"),
        "calib_seconds": data.get("calib_seconds"), "num_test": data.get("num_test"),
        "duplicate_of": data.get("duplicate_of"), "error": data.get("error"),
        "config": _flatten(cfg),
    }


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


def load_records(paths, unreadable: list[str] | None = None) -> pd.DataFrame:
    """Every trustworthy results.json under `paths` (ptq/results_file.py, any schema version up to this code's) as
    one row; the others are skipped and, as 'path: why', appended to `unreadable`."""
    rows = []
    for path, root in find_results(paths):
        data, problem = read_results(path, range(1, RESULTS_SCHEMA_VERSION + 1))
        if data is None:
            if unreadable is not None:
                unreadable.append(f"{path}: {problem}")
            continue
        rows.append(record(path, data, root))
    columns = list(record(Path(RESULTS_FILE), {}).keys())
    return pd.DataFrame(rows, columns=columns)


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Finished runs that are not copies of another job."""
    ok = df[(df["status"] == "ok") & df["duplicate_of"].isna() & df["top1"].notna()]
    return ok.copy()


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
    """Config keys (other than seeds, logging, threads) on which the runs of one cell differ."""
    if len(group) < 2:
        return []
    keys = set().union(*(c.keys() for c in group["config"]))
    differ = []
    for k in sorted(keys):
        if any(k == b or (b.endswith(".") and k.startswith(b)) for b in BENIGN_KEYS):
            continue
        if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in group["config"]}) > 1:
            differ.append(k)
    return differ


def _fp32_of(ok: pd.DataFrame, model: str) -> tuple[float, float, int]:
    """FP32 top-1 of a model: its fp32 runs, else the distinct top1_fp32 values the runs record (the same float
    evaluation repeated by every job counts once)."""
    rows = ok[ok["model"] == model]
    fp = rows[~rows["enabled"]]
    return _stats(fp["top1"]) if len(fp) else _stats(rows["top1_fp32"].dropna().unique())


def model_order(models) -> list[str]:
    """Other models (the test-bed) first, ViT before DeiT before Swin, then the paper's models in its order."""
    from ptq.reference_results import TABLE1

    paper = list(TABLE1)

    def key(m):
        base = base_model_name(m)
        if base in paper:
            return (1, paper.index(base), m)
        family = 1 if "deit" in base else 2 if "swin" in base else 0 if "vit" in base else 3
        return (0, family, m)

    return sorted(set(models), key=key)


def _bits_key(bits: str) -> tuple:
    if bits == "—":
        return (0, 0)
    w, a = bits[1:].split("A")
    return (-int(w), -int(a))


def _method_key(method: str) -> tuple:
    order = ["FP32", "BasePTQ", "PTQ4ViT"]
    return (order.index(method) if method in order else len(order), method)


def _setting_key(setting: str) -> tuple:
    """Order of setting labels: numbers numerically (n=32 before n=128), paper before official."""
    parts = tuple((0, int(x[2:]), "") if x.startswith("n=") and x[2:].isdigit() else (1, 0, x)
                  for x in setting.split())
    return tuple((1, 0, "zz") if p == (1, 0, "official") else p for p in parts)


def _setting_text(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # e.g. the gradient source of a metric that has none
    if key == "n_images":
        return f"n={value}"
    if key == "grad":
        return f"g={value}"
    if key in ("twin_softmax", "twin_gelu"):
        return ("" if value else "no ") + ("ST" if key == "twin_softmax" else "GT")
    return str(value)


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


def main_table(df: pd.DataFrame, drop: bool = False) -> Table:
    """Rows = models; columns = FP32, then method × bits (× settings that vary within a method)."""
    ok = usable(df)
    q = ok[ok["enabled"]].copy()
    varying = {}
    for method, group in q.groupby("method"):
        varying[method] = [k for k in SETTING_KEYS if group[k].astype(str).nunique() > 1]
    q["setting"] = [" ".join(filter(None, (_setting_text(k, r[k]) for k in varying[r["method"]])))
                    for _, r in q.iterrows()]
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
    columns = []
    if len(cells):
        order = cells.drop_duplicates("column")
        columns = [c for _, _, _, c in sorted(zip(map(_method_key, order["method"]), map(_bits_key, order["bits"]),
                                                  map(_setting_key, order["setting"]), order["column"]))]
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
    """Rows from `row_keys` (ordered by `row_order`), columns = model × bits (+ method when several)."""
    ok = usable(df)
    q = ok[ok["enabled"]].copy()
    several = q["method"].nunique() > 1
    q["column"] = [(f"{r['method']} " if several else "") + f"{r['model']} {r['bits']}" for _, r in q.iterrows()]
    keys = row_keys + ["model", "method", "bits", "column"]
    cells, notes = _cell_rows(q, keys, ref_fn)
    if not len(cells):
        return Table(title, pd.DataFrame(columns=row_keys), cells, notes)
    order = cells.drop_duplicates("column")
    models = model_order(q["model"])
    columns = [c for *_, c in sorted(zip(map(models.index, order["model"]), map(_method_key, order["method"]),
                                         map(_bits_key, order["bits"]), order["column"]))]
    about = {r["column"]: r for _, r in order.iterrows()}
    row_of = [tuple(r[k] for k in row_keys) for _, r in cells.iterrows()]
    cells = cells.iloc[sorted(range(len(cells)), key=lambda i: row_order(row_of[i]))].reset_index(drop=True)
    row_index = sorted(set(row_of), key=row_order)
    table = []
    for idx in row_index:
        row = row_cells(idx)
        hit_rows = cells
        for k, v in zip(row_keys, idx):
            hit_rows = hit_rows[hit_rows[k].astype(str) == str(v)]
        row.update({col: _cell_text(hit_rows, col, drop, ref_fn(dict(about[col], **dict(zip(row_keys, idx)))))
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


def metric_row_key(row) -> tuple:
    """(metric, grad) rows: metrics in METRIC_ORDER, the Hessian's gradient sources in GRAD_ORDER."""
    metric, grad = row
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), str(metric),
            GRAD_ORDER.index(grad) if grad in GRAD_ORDER else -1, str(grad))


def ablation_table(df: pd.DataFrame, drop: bool = False) -> Table:
    """The spec's ablation layout: HG / ST / GT switches as rows (spec order, then any other combination)."""
    ok = df.copy()
    ok["HG"] = ok["metric"] == "hessian"
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
    """Rows = metric (the Hessian split by gradient source), columns = model × bits."""
    ok = df.copy()
    ok["grad"] = ok["grad"].fillna("—")

    def row_cells(idx):
        return {"metric": idx[0], "grad": idx[1]}

    title = "Metrics: top-1 drop against FP32 (points)" if drop else "Metrics: top-1 (%)"
    table = _grid_table(ok, ["metric", "grad"], metric_row_key, row_cells, lambda e: None, drop, title)
    table.notes.insert(0, "grad = source of the Hessian metric's gradient (only `hessian` reads it)")
    return table


def pick_layout(df: pd.DataFrame) -> str:
    """ablation when a twin switch varies within a method, metrics when the metric or the gradient source does
    (within a method and compat mode: official mode has its own default gradient source)."""
    q = usable(df)
    q = q[q["enabled"]]
    if not len(q):
        return "main"
    within = q.groupby(["method", "compat"], dropna=False)[["twin_softmax", "twin_gelu", "metric", "grad"]]
    within = within.nunique(dropna=True)
    if (within[["twin_softmax", "twin_gelu"]] > 1).any().any():
        return "ablation"
    if (within[["metric", "grad"]] > 1).any().any():
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


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per job with the numbers the notebooks plot (no nested config)."""
    return df.drop(columns=["config"])


# ---------------------------------------------------------------------------------------------------------------
# Report


def build_report(paths, layout: str = "auto") -> dict:
    """Everything `ptq.report` writes: {"layout", "table", "drop", "failed", "records", "unreadable"}."""
    unreadable: list[str] = []
    df = load_records(paths, unreadable)
    if not len(df):
        return {"layout": layout, "records": df, "unreadable": unreadable}
    if layout == "auto":
        layout = pick_layout(df)
    fn = LAYOUT_FUNCTIONS[layout]
    return {"layout": layout, "table": fn(df), "drop": fn(df, drop=True), "failed": failed_table(df),
            "records": df, "unreadable": unreadable}


def report_markdown(rep: dict, sources) -> str:
    df = rep["records"]
    n_ok = int((df["status"] == "ok").sum())
    n_dup = int(df["duplicate_of"].notna().sum())
    head = (f"Sweep: {', '.join(map(str, sources))} — {len(df)} jobs: {n_ok} ok"
            + (f" ({n_dup} reusing a sibling's results)" if n_dup else "")
            + f", {len(rep['failed'])} failed. Cells: mean ± std over runs when n > 1; "
              "[x] = reference (SPEC.md section 6, ImageNet).")
    parts = [head, "", rep["table"].markdown(), rep["drop"].markdown()]
    if len(rep["failed"]):
        parts += ["### Failed jobs", "", rep["failed"].to_markdown(index=False), ""]
    if rep.get("unreadable"):
        parts += [f"### Skipped files ({len(rep['unreadable'])}, not valid {RESULTS_FILE})", "",
                  *(f"- {line}" for line in rep["unreadable"]), ""]
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
        if len(rep["failed"]):
            written.append(out / "failed.csv")
            rep["failed"].to_csv(written[-1], index=False)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ptq.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR", help="sweep folders (searched recursively)")
    p.add_argument("--out", type=Path, default=None, help="write table/drop .md/.csv/.tex, cells.csv, runs.csv")
    p.add_argument("--format", default=",".join(FORMATS), help="comma-separated subset of md,csv,tex")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
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
        skipped = f" ({len(rep['unreadable'])} unreadable: {'; '.join(rep['unreadable'])[:300]})" \
            if rep["unreadable"] else ""
        print(f"error: no valid {RESULTS_FILE} under {', '.join(args.sweeps)}{skipped}", file=sys.stderr)
        return 2
    print(report_markdown(rep, args.sweeps))
    if args.out is not None:
        for path in write_report(rep, args.out, formats, args.sweeps):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
