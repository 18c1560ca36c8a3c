"""Inference engine: model spec, DICOM series to volume, warm nnU-Net predictors, SEG writing. No networking."""
