"""Inference engine: model spec, DICOM series to volume, warm nnU-Net predictors, SEG writing.

Knows nothing of networking."""
