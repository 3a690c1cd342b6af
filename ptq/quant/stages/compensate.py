"""Closed-form compensation as a recipe stage (ptq/compensate/): appended by `recipe_stages` when
`compensate.name` is not none."""
from ptq.compensate.stage import compensate
from ptq.quant.recipe import register_stage

register_stage("compensate")(compensate)
