"""Data sets: the embedded Fashion-MNIST test-bed and ImageNet-style image folders."""
from ptq.data.dataset import DataBundle, build_data, calibration_indices

__all__ = ["DataBundle", "build_data", "calibration_indices"]
