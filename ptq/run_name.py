"""The name of a single run's folder says every setting that moves its numbers away from the method's preset.

`hydra.run.dir` (conf/config.yaml) is `outputs/runs/<model>/<quantizer>_w<W>a<A><variant>/<time>`; `variant`
(the `${run_variant:...}` resolver registered here) names the metric when it is not the quantizer preset's own
(conf/quantizer/<name>.yaml `override /metric`, else conf/config.yaml's default), the reconstruction when it is not
none, and bits.first_last when it is set: `base_ptq_w4a4_hessian_brecq_fl8`. So a cosine run and a Hessian run
of one method no longer land in the same folder.
"""
from __future__ import annotations

import functools
from pathlib import Path

import yaml
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _default_of(defaults: list, group: str) -> str | None:
    """The option a Hydra defaults list picks for `group` (`group: x` or `override /group: x`), None if none."""
    for item in defaults or []:
        if isinstance(item, dict):
            for key, value in item.items():
                if key.replace("override ", "").strip().lstrip("/") == group:
                    return value
    return None


@functools.cache
def preset_metric(quantizer: str) -> str | None:
    """The metric a quantizer preset calibrates with when the command line names none."""
    preset = CONF_DIR / "quantizer" / f"{quantizer}.yaml"
    own = _default_of((yaml.safe_load(preset.read_text()) or {}).get("defaults"), "metric") if preset.exists() else None
    return own or _default_of(yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults"), "metric")


def run_variant(quantizer, metric, recon, first_last=None) -> str:
    """`_<metric>` when not the preset's, `_<recon>` when not none, `_fl<B>` when bits.first_last is set."""
    parts = []
    if quantizer != "fp32" and metric is not None and metric != preset_metric(str(quantizer)):
        parts.append(str(metric))
    if recon not in (None, "none"):
        parts.append(str(recon))
    if first_last is not None:
        parts.append(f"fl{first_last}")
    return "".join(f"_{p}" for p in parts)


OmegaConf.register_new_resolver("run_variant", run_variant, replace=True)
