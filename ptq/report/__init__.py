"""Tables in the paper's layout from sweep folders: `python -m ptq.report SWEEP_DIR... [--out DIR] [--format ...]`.

Every results.json under the given folders (recursively) is one record. Records that are copies of a sibling job
(`duplicate_of`, see ptq/sweep.py) are left out of the numbers; failed jobs are listed separately; files that are
not a results record (not JSON, null, a list, a newer schema_version) are skipped and listed by name.

What goes where comes from the data: the settings of a run are its flattened resolved config, reduced to the part
that can change its numbers (`ptq.sweep.effective_config`, which asks the metric registry which metrics read a
gradient source). Runs that differ only in seeds (`REPLICATE_KEYS`) are repeats: a cell shows mean ± std (sample
std, ddof=1) over them; a cell of one run shows its number with a dagger (no spread, never ± 0.00). Under each
table: n (runs per cell) and N (test images per run); cells.csv: every measure's mean / std (std empty for n = 1)
and top-1's 95 % interval (ptq/intervals.py: t over runs, Wilson on N images for n = 1). Any other setting that
varies among the runs of one method on one model becomes part of the column label as a paper writes it
(`PTQ4ViT W6A6 128 calib img`, `RepQ-ViT W4A4 + BRECQ (300 it, 1024 img)`), never an average.

Tables (TABLES): one per measure (MEASURES: top-1, drop, agreement, KL) in the chosen layout, and the settings
table (SETTINGS_COLUMNS: what each column was run with). Adding a column is one line: a measure table in MEASURES,
a settings column in SETTINGS_COLUMNS (a function of a records row; the compensation stage's columns,
shown only where a run recorded one, in COMPENSATION_SETTINGS), a runs.csv column in `record`, the wording
of a new setting in column labels in SETTING_FORMATS (or GROUP_LABELS for a whole config group).

Layouts (`--layout`, default auto):
- main: rows = models, columns = FP32 then method × bits (× the settings that vary); the paper's table 1.
- ablation: rows = the HG / ST / GT switches (Hessian metric, softmax twin, GELU twin), columns = model × bits.
- metrics: rows = metric (and the gradient source of metrics that read one), columns = model × bits.
auto picks ablation when a twin switch varies within a method, metrics when only metric settings vary, else main.
Reference numbers (SPEC.md section 6, ptq/reference_results.py) appear in brackets beside ours for paper models.
`--wandb` also logs the tables to the sweep's W&B group (ptq/loggers/wandb_report.py).
"""
# ruff: noqa: F401  (the package re-exports its modules' names: `from ptq.report import X` as before the split)
import pandas as pd

from ptq.plot_style import line_colours, model_label, outlier_profile, save_figure
from ptq.report.cli import main
from ptq.report.data import (
    AXIS_KEYS,
    BOOKKEEPING_KEYS,
    COMP_LABELS,
    COMPENSATION_COLUMNS,
    FORMATS,
    GROUP_LABELS,
    INTERNAL_COLUMNS,
    LABEL_GROUP_ORDER,
    LABEL_IGNORED_KEYS,
    LAYOUTS,
    MARK,
    METHOD_LABELS,
    OFF,
    RECON_LABELS,
    REPLICATE_KEYS,
    SCHEMA_VERSIONS,
    SETTING_FORMATS,
    _is_axis_or_bookkeeping,
    _is_missing,
    _label_key_order,
    _records_frame,
    _resolve_slots,
    _value_id,
    add_setting_labels,
    bits_label,
    compensate_label,
    compensated,
    compensation_columns,
    find_results,
    load_records,
    method_label,
    preset_defaults,
    read_results,
    recon_label,
    record,
    resolved_slots,
    run_settings,
    schema_version,
    setting_text,
    setting_value_order,
    simulation_only_text,
    usable,
    varying_settings,
)
from ptq.report.renderers import report_markdown, write_report
from ptq.report.tables import (
    COMPENSATION_SECONDS,
    COMPENSATION_SETTINGS,
    DAGGER,
    LAYOUT_FUNCTIONS,
    MEASURES,
    OPTIONAL_TABLES,
    RECENT_COLUMNS,
    SETTINGS_COLUMNS,
    TABLES,
    Measure,
    Table,
    _bits_key,
    _cell_rows,
    _cell_text,
    _fp32_of,
    _fp32_runs,
    _grid_table,
    _grid_title,
    _label_runs,
    _measure,
    _method_key,
    _setting,
    _sorted_columns,
    _stats,
    _test_images,
    ablation_row_key,
    ablation_table,
    build_report,
    cell_interval,
    cell_numbers,
    compensation_text,
    failed_table,
    first_last_text,
    fmt_cell,
    fp32_cell,
    main_table,
    maps_kept_text,
    metric_order,
    metric_row_key,
    metrics_table,
    mixed_settings,
    model_order,
    pick_layout,
    recon_text,
    runs_table,
    sample_caption,
    settings_table,
    slot_text,
    usual_n,
)
from ptq.results_file import flat_config as _flatten
