"""Block reconstruction (BRECQ, QDrop, AdaLog's setting): after a method's recipe, learn per unit (a transformer
block, the patch embedding, the head; or a single layer) the weights' rounding (AdaRound) and the activation step
sizes (LSQ) so that the quantized unit reproduces the float unit's output. Runs as the recipe stage
`reconstruct`, a plug-in stage (ptq/recon/stage.py, made known by ptq/plugins.py) appended to every method's recipe
when `recon.name` is not `none`. This package imports ptq/quant's stage interface and engine; ptq/quant never
imports it."""
