"""Instances of one series filed the way the receiver files them: a Part 10 header file in the spool,
then a journal record. For the tests of the services that work from the journal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_node.storage.journal import Journal
from tests.support.journal_rows import instance_record


def write_instance(
    path: Path, study: str, series: str, sop: str, modality: str = "CT", description: str = ""
) -> None:
    """A CT header without pixels: enough for routing and for the spool."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    if description:
        ds.SeriesDescription = description
    ds.BodyPartExamined = "ABDOMEN"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@dataclass
class FiledSeries:
    storage: Path
    journal: Journal
    modality: str = "CT"
    description: str = "Phantom CT"
    calling_ae: str = "STORESCU"
    called_ae: str = "NNUNET"
    expected: int | None = None
    study_uid: str = field(default_factory=generate_uid)
    uid: str = field(default_factory=generate_uid)
    sop_uids: list[str] = field(default_factory=list)

    def add(self, at: float, *, association: str | None = "assoc-1", sop_uid: str | None = None) -> str:
        """File one instance received at ``at``; returns its spool path relative to ``storage``."""
        sop = sop_uid or generate_uid()
        rel = f"spool/{self.study_uid}/{self.uid}/{sop}.dcm"
        write_instance(self.storage / rel, self.study_uid, self.uid, sop, self.modality, self.description)
        self.journal.record_instance(
            instance_record(
                sop,
                self.uid,
                study=self.study_uid,
                path=rel,
                size=(self.storage / rel).stat().st_size,
                called_ae=self.called_ae,
                calling_ae=self.calling_ae,
                assoc=association,
                at=at,
                modality=self.modality,
                description=self.description,
                expected=self.expected,
            )
        )
        self.sop_uids.append(sop)
        return rel

    def add_many(self, at: float, count: int) -> list[str]:
        return [self.add(at) for _ in range(count)]
