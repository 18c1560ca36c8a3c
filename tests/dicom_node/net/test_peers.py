"""Peer strings: ``AE@HOST:PORT`` parsed and validated."""

from __future__ import annotations

import pytest

from dicom_node.errors import ConfigError
from dicom_node.net.peers import Peer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NNUNET@127.0.0.1:11112", Peer("NNUNET", "127.0.0.1", 11112)),
        ("MY AE@pacs.example.org:104", Peer("MY AE", "pacs.example.org", 104)),
        ("A@[::1]:4242", Peer("A", "[::1]", 4242)),
    ],
)
def test_parse(text: str, expected: Peer) -> None:
    peer = Peer.parse(text)
    assert peer == expected
    assert str(peer) == text
    assert Peer.parse(str(peer)) == peer


def test_address_strips_ipv6_brackets() -> None:
    assert Peer.parse("A@[::1]:4242").address == ("::1", 4242)


@pytest.mark.parametrize(
    "text",
    [
        "NNUNET127.0.0.1:11112",
        "NNUNET@127.0.0.1",
        "@host:1",
        "A@:1",
        "A@host:0",
        "A@host:70000",
        "A@host:x",
        "WAYTOOLONGAETITLE1@h:1",
        "A\\B@h:1",
        "A@h o s t:1",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        Peer.parse(text)
