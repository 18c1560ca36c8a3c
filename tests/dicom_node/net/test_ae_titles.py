"""One AE title rule: the configuration, peers given as AE@HOST:PORT and the command line accept and
refuse the same titles, and drop the same insignificant spaces."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dicom_node.cli import main
from dicom_node.config import DestinationConfig, NodeSection
from dicom_node.errors import ConfigError
from dicom_node.net.peers import Peer

BAD = ["", "   ", "A\\B", "SEVENTEEN_CHARS_X", "TAB\tAE", "ÄRZTE", "LINE\n"]


@pytest.mark.parametrize("title", BAD)
def test_a_bad_title_is_refused_everywhere(title: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError, match="ae_title"):
        NodeSection.model_validate({"ae_title": [title]})
    with pytest.raises(ValidationError, match="ae_title"):
        DestinationConfig.model_validate({"ae_title": title, "host": "h", "port": 104})
    with pytest.raises(ConfigError, match="AE title"):
        Peer(title, "127.0.0.1", 104)
    with pytest.raises(SystemExit) as info:
        main(["echo", "PEER@127.0.0.1:104", "--calling-ae", title])
    assert info.value.code == 2 and "--calling-ae: invalid AE title" in capsys.readouterr().err


@pytest.mark.parametrize("title", ["A", " PACS ", "X" * 16, "MY AE", "ae-1_2.3"])
def test_a_good_title_means_the_same_everywhere(title: str) -> None:
    expected = title.strip()
    assert NodeSection.model_validate({"ae_title": title}).ae_title == [expected]
    assert (
        DestinationConfig.model_validate({"ae_title": title, "host": "h", "port": 104}).ae_title == expected
    )
    assert Peer.parse(f"{title}@127.0.0.1:104").ae_title == expected
