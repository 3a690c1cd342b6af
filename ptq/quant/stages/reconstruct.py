"""Block reconstruction as a recipe stage (ptq/recon/): appended by `run_recipe` when `recon.name` is not none."""
from ptq.quant.recipe import register_stage
from ptq.recon.stage import reconstruct

register_stage("reconstruct")(reconstruct)
