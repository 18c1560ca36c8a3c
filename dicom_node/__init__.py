"""DICOM DIMSE node that segments received series with nnU-Net and sends DICOM SEG back."""
