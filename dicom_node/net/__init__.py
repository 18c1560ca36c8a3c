"""DICOM networking: the SCP, the SCU, presentation contexts, the PDU guard, DIMSE statuses."""
