"""UID checks: only digits-and-dots UIDs of 1-64 characters without empty components may build a path
or a record; anything else (path tricks, control characters, non-strings) is refused by name."""

from __future__ import annotations

import pytest

from dicom_node.errors import InvalidUIDError
from dicom_node.uids import MAX_UID_LENGTH, is_valid_uid, require_uid

LONGEST = "2.25." + "1" * (MAX_UID_LENGTH - 5)

# "1.02.3": a leading zero breaks PS3.5 9.1, but senders use such UIDs and their data is still filed
VALID = ["0", "1", "1.2", "1.2.840.10008.5.1.4.1.1.2", "2.25.0", "1.02.3", LONGEST]

INVALID = [
    "",
    ".",
    "..",
    "1..2",  # empty component
    ".1.2",  # leading dot
    "1.2.",  # trailing dot
    "1.2/../../x",
    "../1.2",
    "1.2\\3",
    "1.2\x00",
    "1.2\x003",
    "1.2\n",
    "\n1.2",
    " 1.2",
    "1.2 ",
    "1,2",
    "1.2a",
    "1.-2",
    "1.+2",
    "１.２",  # full-width digits are digits to str.isdigit, not to DICOM
    "1.٢",  # Arabic-Indic digit
    LONGEST + "1",  # 65 characters
]


@pytest.mark.parametrize("uid", VALID)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert require_uid(uid, "SOP Instance UID") == uid


def test_longest_and_one_too_long() -> None:
    assert len(LONGEST) == 64 and is_valid_uid(LONGEST)
    assert len(LONGEST + "1") == 65 and not is_valid_uid(LONGEST + "1")


@pytest.mark.parametrize("uid", INVALID)
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUIDError, match=r"^invalid Series Instance UID: "):
        require_uid(uid, "Series Instance UID")


@pytest.mark.parametrize("value", [None, 12, 1.2, b"1.2", ["1.2"], ("1", "2")])
def test_non_strings_are_not_uids(value: object) -> None:
    assert not is_valid_uid(value)
    with pytest.raises(InvalidUIDError) as info:
        require_uid(value, "Study Instance UID")
    assert str(info.value) == f"invalid Study Instance UID: {value!r}"


def test_message_shows_the_value_escaped_and_shortened() -> None:
    with pytest.raises(InvalidUIDError) as info:
        require_uid("1.2\x00/../etc", "SOP Instance UID")
    assert str(info.value) == "invalid SOP Instance UID: '1.2\\x00/../etc'"  # NUL shown, not written
    with pytest.raises(InvalidUIDError) as info:
        require_uid("9" * 500, "SOP Instance UID")
    message = str(info.value)
    assert message.endswith("...") and len(message) == len("invalid SOP Instance UID: ") + 80
