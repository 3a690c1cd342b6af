"""The stages that plug into every method's recipe from outside ptq/quant: importing this module registers them
(each registers itself with `ptq.quant.stage.register_stage(..., plugin=PlugIn(group, resolve))`, which appends it
to a recipe when `<group>.name` is not `none`). Adding one is one import line here (docs/extending.md, "A stage
after every method"). Imported by whatever resolves a config or runs a job (ptq/app.py, ptq/job_identity.py)."""
import ptq.compensate.stage  # noqa: F401  `compensate` (compensate.name != none), after reconstruct
import ptq.recon.mlp  # noqa: F401  `mlp_reconstruct` (mlp_recon.name != none), before the method's stages
import ptq.recon.stage  # noqa: F401  `reconstruct` (recon.name != none)
