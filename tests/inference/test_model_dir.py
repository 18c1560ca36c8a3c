"""nnU-Net results folders on their own (test_spec goes through spec files): fold discovery, the
rel_path search (exact, substring, none, ambiguous, link loops), reading dataset.json/plans.json,
label and channel tables, and a fingerprint that sees retraining but not copying while reading only
the head and tail of each checkpoint. Checkpoints here are plain bytes: only their bytes matter."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from inference.errors import SpecError
from inference.model_dir import (
    channels_from_dataset,
    find_model_dir,
    fingerprint,
    labels_from_dataset,
    list_folds,
    open_model_folder,
)

CHUNK = 64 * 1024
DATASET = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}


def model(path: Path, *, folds: tuple[str, ...] = ("fold_0",), size: int = 1000, dataset: Any = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dataset.json").write_text(json.dumps(DATASET if dataset is None else dataset))
    (path / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    for i, fold in enumerate(folds):
        (path / fold).mkdir(exist_ok=True)
        (path / fold / "checkpoint_final.pth").write_bytes(bytes((i + n) % 251 for n in range(size)))
    return path


# ------------------------------------------------------------------ folds and folder search


def test_list_folds(tmp_path: Path) -> None:
    root = model(tmp_path / "m", folds=("fold_0", "fold_12", "fold_all"))
    (root / "fold_12" / "checkpoint_best.pth").write_bytes(b"x")
    (root / "fold_12" / "notes.txt").write_text("not a checkpoint")
    (root / "fold_12" / "dir.pth").mkdir()  # a folder, not a checkpoint
    (root / "fold_x").mkdir()
    (root / "fold_3").write_text("a file, not a fold")
    (root / "fold_4").mkdir()  # no checkpoint yet
    assert list_folds(root) == {
        0: ("checkpoint_final.pth",),
        12: ("checkpoint_best.pth", "checkpoint_final.pth"),
        4: (),
        "all": ("checkpoint_final.pth",),
    }
    assert list_folds(tmp_path / "absent") == {}


def test_find_exact_then_by_substring(tmp_path: Path) -> None:
    root = tmp_path / "models"
    a = model(root / "Dataset001_Liver" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    b = model(root / "Dataset002_Spleen" / "nnUNetTrainer__nnUNetPlans__2d")
    assert find_model_dir("m", root, "Dataset001_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres") == a
    assert find_model_dir("m", root, "Dataset002") == b
    assert find_model_dir("m", root, "__2d") == b
    with pytest.raises(SpecError, match="rel_path 'nnUNetTrainer' is ambiguous, it matches Dataset001"):
        find_model_dir("m", root, "nnUNetTrainer")
    with pytest.raises(SpecError, match=r"no model folder .* matches rel_path 'Dataset003'"):
        find_model_dir("m", root, "Dataset003")


def test_find_refusals(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="model 'm': rel_path must be relative to model_folder"):
        find_model_dir("m", tmp_path, str(tmp_path / "abs"))
    with pytest.raises(SpecError, match=r"model 'm': model_folder .*absent does not exist"):
        find_model_dir("m", tmp_path / "absent", "Dataset001")


def test_search_skips_hidden_folders_and_does_not_descend_into_models(tmp_path: Path) -> None:
    root = tmp_path / "models"
    model(root / ".trash" / "Dataset001_Liver" / "T__P__3d_fullres")
    outer = model(root / "Dataset001_Liver" / "T__P__3d_fullres")
    model(outer / "fold_0" / "Dataset001_Liver_copy")  # inside a model folder: never searched
    assert find_model_dir("m", root, "Dataset001") == outer


def test_search_survives_a_link_loop(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    os.symlink(root / "a", root / "a" / "loop")  # models/a/loop -> models/a: endless if followed blindly
    target = model(root / "b" / "Dataset001_Liver" / "T__P__3d_fullres")
    assert find_model_dir("m", root, "Dataset001") == target
    with pytest.raises(SpecError, match="no model folder"):
        find_model_dir("m", root, "Dataset999")  # the whole tree is searched, and the search ends


# ------------------------------------------------------------------ opening a folder


def test_open_reads_names_labels_and_folds(tmp_path: Path) -> None:
    path = model(tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres", folds=("fold_0", "fold_1"))
    folder = open_model_folder("m", path)
    assert (folder.trainer, folder.plans, folder.configuration) == (
        "nnUNetTrainer",
        "nnUNetPlans",
        "3d_fullres",
    )
    assert folder.folds == {0: ("checkpoint_final.pth",), 1: ("checkpoint_final.pth",)}
    assert folder.dataset_json == DATASET
    assert folder.fingerprint == fingerprint(path, folder.folds) and len(folder.fingerprint) == 64
    other = open_model_folder("m", model(tmp_path / "custom_name"))
    assert (other.trainer, other.plans, other.configuration) == (None, None, None)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: shutil.rmtree(p), "model folder .* does not exist"),
        (lambda p: (p / "dataset.json").unlink(), "missing dataset.json in"),
        (lambda p: (p / "plans.json").unlink(), "missing plans.json in"),
        (lambda p: (p / "dataset.json").write_text("{broken"), "cannot read .*dataset.json"),
        (lambda p: (p / "dataset.json").write_bytes(b'{"x": "\xff"}'), "cannot read .*dataset.json"),
        (lambda p: (p / "plans.json").write_text("[1, 2]"), ".*/plans\\.json must hold a JSON object"),
        (lambda p: shutil.rmtree(p / "fold_0"), "no fold folders \\(fold_0, fold_all...\\) in"),
        (
            lambda p: (p / "fold_0" / "checkpoint_final.pth").unlink(),
            "no checkpoint \\(\\*.pth\\) in any fold",
        ),
    ],
)
def test_open_refusals_name_the_model(tmp_path: Path, damage: Any, expected: str) -> None:
    path = model(tmp_path / "T__P__3d_fullres")
    damage(path)
    with pytest.raises(SpecError, match=f"^model 'm': {expected}"):
        open_model_folder("m", path)


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_sees_retraining_not_copying(tmp_path: Path) -> None:
    path = model(tmp_path / "a" / "T__P__3d_fullres", folds=("fold_0", "fold_all"), size=3 * CHUNK)
    folds = list_folds(path)
    first = fingerprint(path, folds)
    copy = tmp_path / "b" / "T__P__3d_fullres"
    shutil.copytree(path, copy)
    os.utime(copy / "fold_0" / "checkpoint_final.pth", (1, 1))
    assert fingerprint(copy, folds) == first

    def changed(edit: Any) -> str:
        shutil.rmtree(copy)
        shutil.copytree(path, copy)
        edit(copy)
        return fingerprint(copy, list_folds(copy))

    ckpt = Path("fold_all/checkpoint_final.pth")

    def flip(offset: int) -> Any:
        def edit(p: Path) -> None:
            data = bytearray((p / ckpt).read_bytes())
            data[offset] ^= 0xFF
            (p / ckpt).write_bytes(bytes(data))

        return edit

    assert changed(flip(10)) != first  # head
    assert changed(flip(3 * CHUNK - 10)) != first  # tail: the zip central directory with CRCs
    assert changed(flip(CHUNK + 100)) == first  # the middle is never read (multi-GB checkpoints)
    assert changed(lambda p: (p / ckpt).write_bytes((p / ckpt).read_bytes() + b"\0")) != first  # size
    assert changed(lambda p: (p / ckpt).rename(p / "fold_all" / "checkpoint_best.pth")) != first
    assert changed(lambda p: (p / "plans.json").write_text('{"plans_name": "other"}')) != first
    assert changed(lambda p: (p / "dataset.json").write_text(json.dumps(DATASET, indent=2))) != first


def test_fingerprint_reads_all_of_a_checkpoint_between_one_and_two_chunks(tmp_path: Path) -> None:
    path = model(tmp_path / "T__P__3d_fullres", size=CHUNK + 5000)
    folds = list_folds(path)
    first = fingerprint(path, folds)
    ckpt = path / "fold_0" / "checkpoint_final.pth"
    data = bytearray(ckpt.read_bytes())
    data[CHUNK + 10] ^= 0xFF  # just past the head: in the tail read
    ckpt.write_bytes(bytes(data))
    assert fingerprint(path, folds) != first


# ------------------------------------------------------------------ labels and channels


def test_labels_without_background_sorted() -> None:
    labels = labels_from_dataset("m", {"labels": {"spleen": 2, "background": 0, "liver": 1}})
    assert list(labels.items()) == [(1, "liver"), (2, "spleen")]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (None, "dataset.json has no 'labels' mapping"),
        ({}, "dataset.json has no 'labels' mapping"),
        (["liver"], "dataset.json has no 'labels' mapping"),
        ({"background": 0}, "dataset.json has no foreground labels"),
        ({"background": 0, "liver": "1"}, "label 'liver' has invalid value '1'"),
        ({"background": 0, "liver": True}, "label 'liver' has invalid value True"),
        ({"background": 0, "liver": -1}, "label 'liver' has invalid value -1"),
        ({"background": 0, "liver": 1, "hepar": 1}, "gives label value 1 twice"),
        ({"background": 0, "bg": 0, "liver": 1}, "gives label value 0 twice"),
        ({"background": 0, "tumor": [1, 2]}, "label 'tumor' is a region"),
        ({"background": 0, "liver": 1, "spleen": 3}, "label values must be 1..2 without gaps, got [1, 3]"),
    ],
)
def test_label_refusals(labels: Any, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        labels_from_dataset("m", {} if labels is None else {"labels": labels})
    assert str(info.value).startswith("model 'm': ") and expected in str(info.value)


def test_channels() -> None:
    assert channels_from_dataset({"channel_names": {"1": "T2", "0": "T1", "x": "skip"}}) == {0: "T1", 1: "T2"}
    assert channels_from_dataset({"modality": {"0": "CT"}}) == {0: "CT"}  # nnU-Net v1 name
    assert channels_from_dataset({"channel_names": {"0": "CT"}, "modality": {"0": "MR"}}) == {0: "CT"}
    assert channels_from_dataset({}) == {} and channels_from_dataset({"channel_names": ["CT"]}) == {}
