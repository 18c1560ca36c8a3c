"""The stdlib command set codec writes what pynetdicom writes and reads what pynetdicom writes."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE

from dicom_node.net import command_set as cs

CT = "1.2.840.10008.5.1.4.1.1.2"


def _pynetdicom_bytes(message: object, primitive: object) -> bytes:
    message.primitive_to_message(primitive)  # type: ignore[attr-defined]
    pdata = next(iter(message.encode_msg(1, 0)))  # type: ignore[attr-defined]  # the command's
    (_, pdv) = pdata.presentation_data_value_list[0]
    return bytes(pdv[1:])


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", "1." + "2" * 62])
@pytest.mark.parametrize(("message_id", "priority"), [(1, 0), (65535, 2)])
def test_store_request_is_byte_for_byte_what_pynetdicom_sends(
    instance: str, message_id: int, priority: int
) -> None:
    rq = C_STORE()
    rq.MessageID = message_id
    rq.AffectedSOPClassUID = CT
    rq.AffectedSOPInstanceUID = instance
    rq.Priority = priority
    rq.DataSet = BytesIO(b"\x08\x00\x60\x00\x02\x00\x00\x00CT")  # a data set follows
    expected = _pynetdicom_bytes(C_STORE_RQ(), rq)
    assert cs.store_request(message_id, CT, instance, priority) == expected


@pytest.mark.parametrize(
    ("status", "comment", "instance"),
    [(0x0000, "", "1.2.3.4.5"), (0xA700, "disk full", "1.2.3.4"), (0xC000, "odd", ""), (0xB000, "", "")],
)
def test_store_response_is_byte_for_byte_what_pynetdicom_sends(
    status: int, comment: str, instance: str
) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = instance or None
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment  # type: ignore[assignment]
    expected = _pynetdicom_bytes(C_STORE_RSP(), rsp)
    assert cs.store_response(9, CT, instance, status, comment) == expected


def test_echo_request_is_byte_for_byte_what_pynetdicom_sends() -> None:
    rq = C_ECHO()
    rq.MessageID = 3
    rq.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert cs.echo_request(3) == _pynetdicom_bytes(C_ECHO_RQ(), rq)


def test_a_pynetdicom_response_decodes_to_its_values() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 300
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = "1.2.3.4.5"
    rsp.Status = 0xA900
    rsp.ErrorComment = "no match"  # type: ignore[assignment]
    command = cs.decode(_pynetdicom_bytes(C_STORE_RSP(), rsp))
    assert cs.get_us(command, cs.COMMAND_FIELD) == cs.C_STORE_RSP
    assert cs.get_us(command, cs.MESSAGE_ID_RESPONDED_TO) == 300
    assert cs.get_us(command, cs.STATUS) == 0xA900
    assert cs.get_text(command, cs.ERROR_COMMENT) == "no match"
    assert cs.get_text(command, cs.AFFECTED_SOP_INSTANCE) == "1.2.3.4.5"
    assert not cs.has_data_set(command)
    assert cs.has_data_set(cs.decode(cs.store_request(1, CT, "1.2.3")))


@pytest.mark.parametrize(
    "raw",
    [
        cs.store_request(1, CT, "1.2.3")[:-3],  # cut inside a value
        cs.store_request(1, CT, "1.2.3") + b"\x00\x00",  # cut inside a header
        b"\x08\x00\x16\x00\x02\x00\x00\x001\x00",  # (0008,0016): not a command element
    ],
)
def test_bytes_that_are_not_a_command_set_are_refused(raw: bytes) -> None:
    with pytest.raises(cs.CommandSetError):
        cs.decode(raw)


def test_a_us_element_of_the_wrong_length_is_refused() -> None:
    command = cs.decode(cs.encode([(cs.COMMAND_FIELD, b"\x01\x00\x00\x00")]))
    with pytest.raises(cs.CommandSetError):
        cs.get_us(command, cs.COMMAND_FIELD)
