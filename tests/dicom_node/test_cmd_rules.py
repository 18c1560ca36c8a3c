"""``dicom-node rules explain DIR`` through the real CLI entry point."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_node.cli import main

CONFIG = """\
node: {ae_title: [NNUNET, OTHER_AE]}
model_spec: spec.yaml
destinations:
  pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
rules:
  - name: mr-brain
    match: {modality: MR, tags: {BodyPartExamined: HEAD|BRAIN}}
    models: [brain]
  - name: ct-demo
    match:
      called_ae: NNUNET
      modality: CT
      series_description: "(?i).*phantom.*"
      tags: {BodyPartExamined: "ABDOMEN|CHEST"}
    models: [demo]
    destinations: [pacs]
  - name: from-orthanc
    match: {calling_ae: ORTHANC}
    models: [demo]
  - name: switched-off
    enabled: false
    models: [demo]
"""


def write_series(folder: Path, *, modality: str, description: str, body_part: str, count: int) -> str:
    """``count`` small single-frame images of one new series; returns its Series Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.SeriesDescription, ds.BodyPartExamined = modality, description, body_part
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = 4
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return str(series)


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path, str, str]:
    config = tmp_path / "node.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    data = tmp_path / "in"
    ct = write_series(
        data / "a" / "ct", modality="CT", description="Phantom CT", body_part="ABDOMEN", count=3
    )
    mr = write_series(data / "b", modality="MR", description="T1 knee", body_part="KNEE", count=2)
    (data / "README.txt").write_text("not DICOM", encoding="utf-8")
    return config, data, ct, mr


def block(out: str, series_uid: str) -> str:
    """The lines printed for one series."""
    match = re.search(rf"^Series {re.escape(series_uid)}\n((?:  .*\n)+)", out, re.MULTILINE)
    assert match, f"no block for {series_uid} in:\n{out}"
    return match.group(1)


def test_explain_two_series_one_matching(
    study: tuple[Path, Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, ct, mr = study
    assert main(["rules", "explain", str(data), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Called AE 'NNUNET', calling AE ''" in out  # node's first AE title, empty calling AE
    assert "calling_ae conditions fail unless" in out

    ct_block = block(out, ct)
    assert "modality CT, description 'Phantom CT', 3 instance(s)" in ct_block
    assert "MATCH ct-demo: models demo; destinations pacs" in ct_block
    assert "rule mr-brain: no match: modality: 'CT' does not fully match 'MR'" in ct_block
    assert "rule from-orthanc: not tried after rule 'ct-demo'" in ct_block
    assert "calling_ae: '' does not fully match 'ORTHANC'" in ct_block
    assert "rule switched-off: disabled" in ct_block

    mr_block = block(out, mr)
    assert "modality MR, description 'T1 knee', 2 instance(s)" in mr_block
    assert "no rule matches" in mr_block
    assert "MATCH" not in mr_block
    assert "tags.BodyPartExamined: 'KNEE' does not fully match 'HEAD|BRAIN'" in mr_block
    assert "rule ct-demo: no match: modality: 'MR' does not fully match 'CT'" in mr_block

    assert "skipped 1 file(s) that are not DICOM instances" in out
    assert "README.txt" in out


def test_explain_with_given_aes(
    study: tuple[Path, Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, ct, mr = study
    args = ["rules", "explain", str(data), "--config", str(config), "--called-ae", "OTHER_AE"]
    assert main([*args, "--calling-ae", "ORTHANC"]) == 0
    out = capsys.readouterr().out
    assert "calling_ae conditions fail unless" not in out
    ct_block = block(out, ct)
    assert "rule ct-demo: no match: called_ae: 'OTHER_AE' does not fully match 'NNUNET'" in ct_block
    assert "MATCH from-orthanc" in ct_block
    assert "MATCH from-orthanc" in block(out, mr)


def test_explain_with_a_rules_file(
    study: tuple[Path, Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, _ct, mr = study
    rules = config.parent / "try.yaml"
    rules.write_text(
        "- {name: knees, match: {tags: {BodyPartExamined: KNEE}}, models: demo}\n", encoding="utf-8"
    )
    assert main(["rules", "explain", str(data), "--config", str(config), "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert f"Rules from {rules}: 1 (knees)" in out
    assert "MATCH knees" in block(out, mr)


def test_explain_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DICOM_NODE_CONFIG", raising=False)
    assert main(["rules", "explain", str(tmp_path)]) == 2
    assert "give --config PATH" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{name: x}]\n", encoding="utf-8")
    assert main(["rules", "explain", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "rules[0] (x)" in err and "models" in err  # the rule and what it lacks are named
    assert main(["rules", "explain", str(tmp_path / "nope"), "--config", str(bad)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_explain_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["rules", "explain", str(empty), "--config", str(config)]) == 0
    assert "no DICOM series found" in capsys.readouterr().out
