"""Named DIMSE status codes used by the node (PS3.7 Annex C, PS3.4 B.2.3), in one place."""

from __future__ import annotations

from typing import Final

SUCCESS: Final = 0x0000

# C-STORE failures (PS3.4 Table B.2-1)
OUT_OF_RESOURCES: Final = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
# 0xC001-0xC0FF are "cannot understand" too; we use the sub-codes to say what was wrong.
CANNOT_UNDERSTAND_INVALID_UID: Final = 0xC001
CANNOT_UNDERSTAND_MISSING_ATTRIBUTE: Final = 0xC002
CANNOT_UNDERSTAND_UNREADABLE: Final = 0xC003
PROCESSING_FAILURE: Final = 0x0110  # general failure (PS3.7 C.4.2)

# C-STORE warnings
COERCION_OF_DATA_ELEMENTS: Final = 0xB000
ELEMENTS_DISCARDED: Final = 0xB006
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Final = 0xB007

# A-ASSOCIATE-RJ reasons (PS3.8 9.3.4), service-user source
REJECT_CALLING_AE_NOT_RECOGNIZED: Final = 0x03
REJECT_CALLED_AE_NOT_RECOGNIZED: Final = 0x07
REJECT_NO_REASON: Final = 0x01


def is_success(status: int) -> bool:
    return status == SUCCESS


def is_warning(status: int) -> bool:
    return (
        status
        in (0x0001, COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED, DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING)
        or (status & 0xF000) == 0xB000
    )


def describe(status: int) -> str:
    """A short human-readable description of a status code."""
    names = {
        SUCCESS: "Success",
        OUT_OF_RESOURCES: "Refused: out of resources",
        DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: data set does not match SOP class",
        CANNOT_UNDERSTAND: "Error: cannot understand",
        CANNOT_UNDERSTAND_INVALID_UID: "Error: cannot understand (invalid UID)",
        CANNOT_UNDERSTAND_MISSING_ATTRIBUTE: "Error: cannot understand (missing attribute)",
        CANNOT_UNDERSTAND_UNREADABLE: "Error: cannot understand (unreadable data set)",
        PROCESSING_FAILURE: "Failure: processing failure",
        COERCION_OF_DATA_ELEMENTS: "Warning: coercion of data elements",
        ELEMENTS_DISCARDED: "Warning: elements discarded",
        DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING: "Warning: data set does not match SOP class",
    }
    return names.get(status, f"status 0x{status:04X}")
