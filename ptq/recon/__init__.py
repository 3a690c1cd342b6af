"""Block reconstruction (BRECQ, QDrop, AdaLog's setting): after a method's recipe, learn per unit (a transformer
block, the patch embedding, the head; or a single layer) the weights' rounding (AdaRound) and the activation step
sizes (LSQ) so that the quantized unit reproduces the float unit's output. Runs as the recipe stage
`reconstruct` (registered in ptq/quant/stages/reconstruct.py), appended when `recon.name` is not `none`."""
