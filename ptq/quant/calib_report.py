"""What a calibration reports: per searched op its steps (`OpResult`, `StepResult`) and the whole run's
`CalibReport` (layers, seconds, passes, stages, reconstruction rows), which every recipe stage adds to. Plain
records below the stages and the engine, so both can name them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepResult:
    operand: str
    round: int
    best_index: list[int]
    score: float
    n_candidates: int
    quantizer: str = ""
    param: list[float] = field(default_factory=list)   # the chosen parameter, one value per scale group


@dataclass
class OpResult:
    name: str
    seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)


@dataclass
class CalibReport:
    layers: list[OpResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    passes: int = 0
    stages: list[str] = field(default_factory=list)
    reconstruction: dict = field(default_factory=dict)   # the `reconstruct` stage's per-unit rows (ptq/recon/)
    compensation: dict = field(default_factory=dict)     # the `compensate` stage's per-block rows (ptq/compensate/)
    mlp_reconstruction: dict = field(default_factory=dict)   # the `mlp_reconstruct` stage's per-MLP rows

    def records(self) -> list[dict]:
        """One row per searched operand (its last round): layer, operand, quantizer, chosen parameter (compact),
        score, the layer's search seconds; what W&B shows as the calibration table."""
        rows = []
        for layer in self.layers:
            last = {s.operand: s for s in layer.steps}
            for s in last.values():
                p = s.param
                param = [round(v, 6) for v in p] if len(p) <= 4 else {
                    "min": round(min(p), 6), "mean": round(sum(p) / len(p), 6), "max": round(max(p), 6), "n": len(p)}
                rows.append({"layer": layer.name, "operand": s.operand, "quantizer": s.quantizer, "param": param,
                             "score": s.score, "candidates": s.n_candidates, "seconds": round(layer.seconds, 3)})
        return rows

    def summary(self) -> dict:
        return {"layers": len(self.layers), "capture_passes": self.passes, "stages": self.stages,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "search_seconds_per_layer": {r.name: round(r.seconds, 3) for r in self.layers},
                "records": self.records(), **({"reconstruction": self.reconstruction} if self.reconstruction else {}),
                **({"compensation": self.compensation} if self.compensation else {}),
                **({"mlp_reconstruction": self.mlp_reconstruction} if self.mlp_reconstruction else {})}
