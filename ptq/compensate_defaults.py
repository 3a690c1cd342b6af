"""What the `compensate` group's nulls resolve to, per compensate.compat (ptq/compensate/SPEC.md: the released
code's departures). A leaf module: read by the compensation config (ptq/compensate/config.py) and by the data
bundle (ptq/data/dataset.py, which draws the augmented compensation images) without either importing the other."""

COMPENSATE_BY_COMPAT = {"paper": {"ridge": 1e-3, "solver": "solve64", "augmentation": "none"},
                        "official": {"ridge": 0.0, "solver": "inverse32", "augmentation": "train"}}
