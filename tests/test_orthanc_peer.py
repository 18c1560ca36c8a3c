"""The Orthanc test peer (tests/support/orthanc.py) works: it starts on free ports, accepts a C-STORE from
dcmtk's storescu, lists the instance over REST, and pushes a study to another DICOM peer."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.orthanc import (
    Modality,
    OrthancFactory,
    OrthancServer,
    orthanc_factory,
    start_orthanc,
)
from tests.support.tools import dcmtk, free_port, peer_env, wait_for

__all__ = ["orthanc_factory"]

pytestmark = [pytest.mark.orthanc, pytest.mark.dcmtk]


def _ct_file() -> Path:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return Path(path)


def test_orthanc_receives_from_storescu_and_lists_over_rest(orthanc_factory: OrthancFactory) -> None:
    pacs: OrthancServer = orthanc_factory()
    assert pacs.studies() == []
    src = _ct_file()
    ds = pydicom.dcmread(src, stop_before_pixels=True)

    cmd = [dcmtk("storescu"), "-aet", "STORESCU", "-aec", pacs.ae_title, "127.0.0.1", str(pacs.dicom_port)]
    proc = subprocess.run(
        [*cmd, str(src)],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr

    study_id = pacs.study_id(str(ds.StudyInstanceUID))
    assert study_id is not None
    series = pacs.series_of_study(study_id)
    assert [s["MainDicomTags"]["SeriesInstanceUID"] for s in series] == [str(ds.SeriesInstanceUID)]
    instances = pacs.instances_of_series(series[0]["ID"])
    assert len(instances) == 1
    tags = pacs.instance_tags(instances[0]["ID"])
    assert tags["SOPInstanceUID"] == str(ds.SOPInstanceUID)
    assert tags["Modality"] == "CT"


def test_orthanc_pushes_a_study_to_a_declared_modality(orthanc_factory: OrthancFactory) -> None:
    # A second Orthanc plays the receiving modality; the first one knows it from its config.
    receiver = orthanc_factory(ae_title="RECEIVER")
    sender = orthanc_factory(modalities={"rcv": Modality("RECEIVER", "127.0.0.1", receiver.dicom_port)})
    answer = sender.upload(_ct_file())

    result = sender.push("rcv", answer["ParentStudy"])

    assert result.get("FailedInstancesCount", 0) == 0
    assert result.get("InstancesCount") == 1
    assert wait_for(lambda: receiver.instances(), timeout=30, what="instance at the receiver")
    ds = pydicom.dcmread(_ct_file(), stop_before_pixels=True)
    assert receiver.study_id(str(ds.StudyInstanceUID)) is not None


def test_orthanc_start_fails_loudly_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import orthanc as orthanc_support

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = int(busy.getsockname()[1])
        ports = iter([taken, free_port()])
        monkeypatch.setattr(orthanc_support, "free_port", lambda: next(ports))
        with pytest.raises(orthanc_support.OrthancError, match="exited"):
            start_orthanc(tmp_path / "busy", startup_timeout=30)
