"""The DIMSE statuses and association outcomes the node uses, named once; their meaning and wording
come from pynetdicom (:mod:`pynetdicom.status`, :mod:`pynetdicom.pdu`), not from copies of its tables.

pynetdicom is imported only when a text is asked for (a failure to describe): ``dicom-node send`` and
``echo`` start without it, and :func:`is_stored` says "stored" by PS3.7 Annex C itself (a test checks
it agrees with pynetdicom's categories for every code).

C-STORE failures follow PS3.4 B.2.3 as pynetdicom's own storescp uses them: 0xA7xx "Refused: Out of
Resources" when *we* cannot keep the data (disk full, a write/fsync/rename error, the journal cannot
commit: the sender should retry later), 0xA9xx and 0xCxxx only when the *data* is at fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pynetdicom.pdu import A_ABORT_RQ
    from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT

SUCCESS: Final = 0x0000

# C-STORE failures (PS3.4 Table B.2-1)
OUT_OF_RESOURCES: Final = 0xA700  # disk full, below the reserve, or an I/O error filing the data
OUT_OF_RESOURCES_UNEXPECTED: Final = 0xA701  # the journal could not commit, or another failure of ours
DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122  # the command's SOP class is not its context's
CANNOT_UNDERSTAND: Final = 0xC000
# 0xC001-0xC0FF are "cannot understand" too; we use the sub-codes to say what was wrong.
CANNOT_UNDERSTAND_INVALID_UID: Final = 0xC001
CANNOT_UNDERSTAND_MISSING_ATTRIBUTE: Final = 0xC002
CANNOT_UNDERSTAND_UNREADABLE: Final = 0xC003

# A-ASSOCIATE-RJ (PS3.8 9.3.4): we reject permanently, as the service user, for these reasons
REJECT_PERMANENT: Final = 0x01
REJECT_SOURCE_SERVICE_USER: Final = 0x01
REJECT_CALLING_AE_NOT_RECOGNIZED: Final = 0x03
REJECT_CALLED_AE_NOT_RECOGNIZED: Final = 0x07


def is_stored(status: int) -> bool:
    """The peer kept the instance: success, or a warning (stored with changes: 0x0001, 0x0107,
    0x0116, 0xBxxx; PS3.7 C.1-C.4)."""
    return status in (SUCCESS, 0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def describe(status: int) -> str:
    """pynetdicom's category and text for a C-STORE (or C-ECHO) status, e.g. ``"Failure: Refused:
    Out of Resources"``; a code it does not know is shown by its category alone."""
    if status == SUCCESS:
        return "Success"
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

    category = code_to_category(status)
    entry = STORAGE_SERVICE_CLASS_STATUS.get(status)
    return f"{category}: {entry[1]}" if entry else category


def rejection_text(result: int, source: int, reason: int) -> str:
    """An A-ASSOCIATE-RJ in pynetdicom's words, e.g. ``"Rejected Permanent by Service User: Called AE
    title not recognised"``."""
    from pynetdicom.pdu_primitives import A_ASSOCIATE

    rj = A_ASSOCIATE()
    rj.result = result
    rj.result_source = source
    rj.diagnostic = reason
    return describe_rejection(rj)


def describe_rejection(rj: A_ASSOCIATE) -> str:
    """The text of a received (or sent) A-ASSOCIATE-RJ primitive."""
    return f"{rj.result_str} by {rj.source_str}: {rj.reason_str}"


def describe_abort(primitive: A_ABORT | A_P_ABORT) -> str:
    """An A-ABORT or A-P-ABORT in pynetdicom's words, e.g. ``"DUL service-user"`` or ``"DUL
    service-provider: Unexpected PDU"``."""
    from pynetdicom.pdu import A_ABORT_RQ

    pdu = A_ABORT_RQ()
    pdu.from_primitive(primitive)
    return _abort_words(pdu)


def abort_text(source: int, reason: int) -> str:
    """A received A-ABORT PDU's source and reason (PS3.8 9.3.8) in the words of
    :func:`describe_abort`."""
    from pynetdicom.pdu import A_ABORT_RQ

    pdu = A_ABORT_RQ()
    pdu.source = source
    pdu.reason_diagnostic = reason
    return _abort_words(pdu)


def _abort_words(pdu: A_ABORT_RQ) -> str:
    if pdu.source == 0x02:
        return f"{pdu.source_str}: {pdu.reason_str}"
    return pdu.source_str
