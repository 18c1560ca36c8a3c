"""The test support reading storescp output counts a file only once it reads completely."""

from __future__ import annotations

from pathlib import Path

from tests.support.instances import make_ct
from tests.support.node_setup import received_segs
from tests.support.store_peers import stored_sop_uids


def test_a_file_still_being_written_is_left_out_until_it_reads_completely(tmp_path: Path) -> None:
    """Every prefix of a SEG-modality file (as storescp leaves it mid-write) is skipped by
    received_segs (stored_sop_uids does not raise on it); the whole file is found."""
    seg = make_ct(sop_uid="1.2.3.4.5")
    seg.Modality = "SEG"
    whole_path = tmp_path / "whole.dcm"
    seg.save_as(whole_path, enforce_file_format=True)
    data = whole_path.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    partial = out / "SEG.1.2.3.4.5"
    cuts = sorted({*range(0, len(data), max(1, len(data) // 97)), len(data) - 1})
    for cut in cuts:
        partial.write_bytes(data[:cut])
        assert received_segs(out) == {}, cut
        assert len(stored_sop_uids(out)) <= 1, cut  # read without raising
    partial.write_bytes(data)
    assert received_segs(out) == {"1.2.3.4.5": [partial]}
    assert stored_sop_uids(out) == ["1.2.3.4.5"]
