"""``dicom-node predict``: outputs, exit codes and one-line errors. One success and one failure run
the installed console script in a subprocess; the other cases call the CLI entry point in-process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_node.cli import build_parser, main
from dicom_node.commands.predict import _request_args, default_spec
from dicom_node.demo.bundled import demo_model_spec
from dicom_node.demo.phantom import make_phantom, write_ct_series
from inference.series import load_series
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid
from tests.support.tools import dciodvfy

SCRIPT = Path(sys.executable).parent / "dicom-node"


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spec")
    return write_random_spec(
        root, {"organ": {"seed": 1, "aliases": ["body"], "default_args": {"tile_step_size": 1.0}}}
    )


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct")
    write_ct_series(make_phantom(shape=(16, 32, 32), seed=5), folder, shuffle_names=True)
    return folder


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env, check=False
    )


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.slow
def test_predict_writes_seg_and_nifti_and_prints_where(spec: Path, ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "predict", "--spec", str(spec), "--model", "body", "--input", str(ct), "--output", str(out),
        "--nifti", "--device", "cpu", "--no-tta",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = [Path(line) for line in proc.stdout.splitlines()]
    assert printed == [out / "seg-organ.dcm", out / "organ.nii.gz"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(printed[1])))
    assert len(np.unique(labels)) > 1
    geometry = load_series(sorted(ct.iterdir())).volume.geometry
    np.testing.assert_array_equal(seg_labels_on_grid(printed[0], geometry), labels)
    assert dciodvfy(printed[0]).errors == []


@pytest.mark.slow
def test_failure_is_one_line_without_traceback(spec: Path, ct: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "predict", "--spec", str(spec), "--model", "nope", "--input", str(ct), "--output", str(tmp_path),
        "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert_one_error_line(proc.stderr, "unknown model 'nope'", "organ")


def predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_empty_input_folder(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    code, out, err = predict(
        capsys,
        "--spec",
        str(spec),
        "--model",
        "organ",
        "--input",
        str(empty),
        "--output",
        str(tmp_path / "o"),
    )
    assert (code, out) == (1, "")
    assert_one_error_line(err, f"input {empty} holds no DICOM series")
    assert not (tmp_path / "o").exists()


def test_several_series_in_one_folder(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed = tmp_path / "mixed"
    write_ct_series(make_phantom(shape=(8, 16, 16), seed=1), mixed / "a", series_description="first")
    write_ct_series(make_phantom(shape=(8, 16, 16), seed=2), mixed / "b", series_description="second")
    code, _, err = predict(
        capsys,
        "--spec",
        str(spec),
        "--model",
        "organ",
        "--input",
        str(mixed),
        "--output",
        str(tmp_path / "o"),
    )
    assert code == 1
    assert_one_error_line(err, "holds 2 series", "'first'", "'second'")


def test_missing_input_folder_and_spec(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = predict(
        capsys,
        "--spec",
        str(spec),
        "--model",
        "organ",
        "--input",
        str(tmp_path / "nowhere"),
        "--output",
        str(tmp_path),
    )
    assert code == 1
    assert_one_error_line(err, "is not a folder")
    code, _, err = predict(
        capsys,
        "--spec",
        str(tmp_path / "no.yaml"),
        "--model",
        "organ",
        "--input",
        str(tmp_path),
        "--output",
        str(tmp_path),
    )
    assert code == 1
    assert_one_error_line(err, "no.yaml not found")


def test_bad_folds_and_checkpoint(
    spec: Path, ct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "--spec",
        str(spec),
        "--model",
        "organ",
        "--input",
        str(ct),
        "--output",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    code, _, err = predict(capsys, *base, "--folds", "3")
    assert code == 1
    assert_one_error_line(err, "fold 3 not found")
    code, _, err = predict(capsys, *base, "--checkpoint", "checkpoint_best.pth")
    assert code == 1
    assert_one_error_line(err, "checkpoint_best.pth")
    code, _, err = predict(capsys, *base, "--folds", "zero")
    assert code == 1
    assert_one_error_line(err, "--folds takes fold numbers or 'all'")
    code, _, err = predict(capsys, *base, "--tile-step-size", "1.5")
    assert code == 1
    assert_one_error_line(err, "tile_step_size")


def test_debug_log_level_shows_the_traceback(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    args = [
        "predict",
        "--spec",
        str(spec),
        "--model",
        "organ",
        "--input",
        str(tmp_path / "x"),
        "--output",
        str(tmp_path),
    ]
    with caplog.at_level(logging.DEBUG, logger="dicom_node.commands.predict"):
        assert main(["--log-level", "DEBUG", *args]) == 1
    failures = [r for r in caplog.records if r.name == "dicom_node.commands.predict" and r.exc_info]
    assert len(failures) == 1 and failures[0].levelno == logging.DEBUG


def test_options_become_request_args() -> None:
    parser = build_parser()
    ns = parser.parse_args(
        ["predict", "--model", "m", "--input", "i", "--output", "o", "--folds", "0", "2", "--checkpoint",
         "checkpoint_best.pth", "--tta", "--tile-step-size", "0.8"]
    )  # fmt: skip
    assert _request_args(ns) == {
        "use_folds": [0, 2],
        "checkpoint_name": "checkpoint_best.pth",
        "tta": True,
        "tile_step_size": 0.8,
    }
    ns = parser.parse_args(
        ["predict", "--model", "m", "--input", "i", "--output", "o", "--folds", "all", "--no-tta"]
    )
    assert _request_args(ns) == {"use_folds": "all", "tta": False}
    ns = parser.parse_args(["predict", "--model", "m", "--input", "i", "--output", "o"])
    assert _request_args(ns) == {} and ns.device == "auto" and ns.empty_result == "empty_seg"


def test_default_spec_is_the_working_folder_one_else_the_bundled(tmp_path: Path) -> None:
    assert default_spec(tmp_path) == demo_model_spec()
    assert demo_model_spec().is_file()
    local = tmp_path / "model-serve-spec.yaml"
    local.write_text("models: []\n")
    assert default_spec(tmp_path) == local


def test_model_serve_spec_variable_names_the_spec(tmp_path: Path) -> None:
    (tmp_path / "model-serve-spec.yaml").write_text("models: []\n")
    chosen = tmp_path / "elsewhere.yaml"
    assert default_spec(tmp_path, environ={"MODEL_SERVE_SPEC": str(chosen)}) == chosen
