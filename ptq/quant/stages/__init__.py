"""Recipe stages of methods beyond BasePTQ / PTQ4ViT: each module here registers its stages with
`ptq.quant.recipe.register_stage` and is imported when ptq.quant.recipe is (see docs/extending.md)."""
