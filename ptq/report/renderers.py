"""Renderers of a report (`build_report`'s mapping): the markdown printed by `python -m ptq.report` and the
md / csv / tex files written with `--out`."""
from __future__ import annotations

from pathlib import Path

from ptq.report.data import FORMATS
from ptq.report.tables import DAGGER, OPTIONAL_TABLES, TABLES


def report_markdown(rep: dict, sources) -> str:
    df = rep["records"]
    n_ok = int((df["status"] == "ok").sum())
    n_dup = int(df["duplicate_of"].notna().sum())
    n_bad = len(rep.get("unreadable", ()))
    head = (f"Sweep: {', '.join(map(str, sources))} — {len(df)} jobs: {n_ok} ok"
            + (f" ({n_dup} reusing a sibling's results)" if n_dup else "")
            + f", {len(rep['failed'])} failed" + (f", {n_bad} unreadable files skipped" if n_bad else "")
            + f". Cells: mean ± sample std over the n runs of a cell when n > 1, {DAGGER} = one run (n = 1, no "
              "spread); [x] = reference (SPEC.md section 6, ImageNet); n and the number of test images under each "
              "table, 95 % intervals in cells.csv.")
    parts = [head, "", *(rep[key].markdown() for key in TABLES if key in rep)]
    if len(rep["failed"]):
        parts += ["### Failed jobs", "", rep["failed"].to_markdown(index=False), ""]
    if n_bad:
        parts += ["### Unreadable results files (skipped)", "", rep["unreadable"].to_markdown(index=False), ""]
    return "\n".join(parts)


def write_report(rep: dict, out: Path, formats=FORMATS, sources=()) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (key for key in TABLES if key in rep):
        t = rep[name]
        if "md" in formats:
            written.append(out / f"{name}.md")
            written[-1].write_text(t.markdown() if name != "table" else report_markdown(rep, sources))
        if "csv" in formats:
            written.append(out / f"{name}.csv")
            rep["tables"][name].to_csv(written[-1], index=False)
        if "tex" in formats:
            written.append(out / f"{name}.tex")
            written[-1].write_text(t.latex())
    if "csv" in formats:
        for name, frame in rep["tables"].items():
            if name not in TABLES and (name not in OPTIONAL_TABLES or len(frame)):
                written.append(out / f"{name}.csv")
                frame.to_csv(written[-1], index=False)
    return written
