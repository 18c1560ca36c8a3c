"""The stdlib upper layer and status words against pynetdicom's own decoders and tables."""

from __future__ import annotations

import pynetdicom
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import ImplementationVersionNameNotification
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from dicom_node.net import ul
from dicom_node.net.dimse_status import is_stored


def test_implementation_announced_is_pynetdicoms() -> None:
    """The node announces one implementation (the receiver writes pynetdicom's into file metas)."""
    assert ul.IMPLEMENTATION_CLASS_UID == pynetdicom.PYNETDICOM_IMPLEMENTATION_UID
    assert ul.IMPLEMENTATION_VERSION_NAME == pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION


def test_association_request_decodes_in_pynetdicom_as_proposed() -> None:
    contexts = [
        ul.Proposed(1, "1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1",)),
        ul.Proposed(3, "1.2.840.10008.5.1.4.1.1.4", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),
    ]
    raw = ul.associate_rq("PACS", "NODE", contexts, max_length=32768)
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    assert primitive.called_ae_title == "PACS"
    assert primitive.calling_ae_title == "NODE"
    assert primitive.application_context_name == ul.APPLICATION_CONTEXT
    assert [
        (cx.context_id, cx.abstract_syntax, tuple(cx.transfer_syntax))
        for cx in primitive.presentation_context_definition_list
    ] == [(cx.context_id, cx.abstract_syntax, cx.transfer_syntaxes) for cx in contexts]
    assert primitive.maximum_length_received == 32768
    assert primitive.implementation_class_uid == ul.IMPLEMENTATION_CLASS_UID
    [version] = [
        item.implementation_version_name
        for item in primitive.user_information
        if isinstance(item, ImplementationVersionNameNotification)
    ]
    assert version == ul.IMPLEMENTATION_VERSION_NAME
    assert len(raw) == pdu.pdu_length + 6


def test_stored_statuses_are_pynetdicoms_success_and_warnings() -> None:
    for code in range(0x10000):
        assert is_stored(code) == (code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING)), hex(code)
