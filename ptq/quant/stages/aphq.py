"""APHQ-ViT's calibration (CVPR'25; its code github GoatWu/APHQ-ViT, read outside the repository) as one recipe
stage, `quantizer.recipe: [aphq_search]` (conf/quantizer/aphq.yaml; what it does and where paper and code depart:
ptq/quant/stages/APHQ_SPEC.md).

`aphq_search` is AdaLog's layer-by-layer pipeline (ptq/quant/stages/adalog.py: float inputs, the LayerNorm
reparameterization of per-channel post-LayerNorm inputs, self fits then `search.rounds` rounds on the layer output)
with one change, in the matmuls: each operand whose quantizer has search phases (`uniform_clip`) first gets one
joint pass (the pairs (u_i, l_i) of its clipping bounds), a before b, then `search.rounds` rounds of refinement (lower
bound, then upper), a before b, each on the matmul's output with the other operand quantized. Linears (uniform_grid
with `stages: 1`: the plain grid, no beam) and the patch-embedding conv (uniform_clip, phase `full`: joint, then one
refinement) run AdaLog's pipeline unchanged.
"""
from __future__ import annotations

import time

from ptq.quant.modules import QMatMul
from ptq.quant.search import OpResult
from ptq.quant.stage import RecipeState, register_stage
from ptq.quant.stages.adalog import LayerSearch, search_layers
from ptq.quant.stages.base import SEARCH_READS


class APHQLayerSearch(LayerSearch):
    """AdaLog's per-layer pipeline; matmuls get a joint pass before the refinement rounds (module docstring)."""

    def run(self, rounds: int) -> OpResult:
        if not isinstance(self.op, QMatMul):
            return super().run(rounds)
        t0 = time.time()
        quantizers = self.op.quantizers()
        for operand, q in quantizers.items():
            self.start(operand, q)
        phased = [o for o, q in quantizers.items() if q.searched and hasattr(q, "phase")]
        for operand in phased:
            quantizers[operand].phase = "joint"
            self.fit(operand, "output")
        for operand in phased:
            quantizers[operand].phase = "refine"
        try:
            for r in range(rounds):
                self.round = r
                for operand in (o for o, q in quantizers.items() if q.searched):
                    self.fit(operand, "output")
        finally:
            for operand in phased:
                quantizers[operand].phase = "full"
        self.result.seconds = time.time() - t0
        return self.result


@register_stage("aphq_search", reads=SEARCH_READS)
def aphq_search(state: RecipeState) -> None:
    """Capture each layer's float operands and output once, then run its pipeline (module docstring)."""
    search_layers(state, APHQLayerSearch)
