"""Out of the simulator: deployability of a calibrated model, its ONNX QDQ export and its parity in ONNX Runtime."""
from ptq.export.deployability import deployability, refusal
from ptq.export.onnx_graph import export_modules, write_onnx

__all__ = ["deployability", "refusal", "export_modules", "write_onnx"]
