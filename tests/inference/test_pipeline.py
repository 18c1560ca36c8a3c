"""The pipeline end to end on the CPU: phantom DICOM series in, DICOM SEG (and NIfTI) out, with
real nnU-Net predictors (random-weights stand-in models, see tests/support/random_model.py).

Expected label maps come from the predictor run directly on the phantom's own array, so they do
not depend on our series loader; SEGs are read back with an independent, geometry-based reader
(tests/support/seg_read.py) and validated with dciodvfy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless, RLELossless

from dicom_node.demo.phantom import Phantom, make_phantom, write_ct_series
from inference.api import InferenceRequest
from inference.errors import ArgsError, SeriesError, UnknownModelError
from inference.executor import InProcessExecutor
from inference.postprocess import intersect_components
from inference.series import load_series
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid
from tests.support.tools import dciodvfy

SHAPE = (16, 32, 32)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spec")
    quick = {"tile_step_size": 1.0}
    return write_random_spec(
        root,
        {
            "organ": {"seed": 1, "aliases": ["body"], "default_args": quick},
            "lesion": {"seed": 2, "labels": ("background", "lesion"), "default_args": {**quick, "tta": True}},
            "two": {"seed": 3, "channels": ("CT", "CT late"), "default_args": quick},
            "nothing": {"seed": 4, "finds_nothing": True, "default_args": quick},
        },
    )


@pytest.fixture(scope="module")
def executor(spec: Path) -> InProcessExecutor:
    return InProcessExecutor(spec, device="cpu", max_models=4, num_threads=2)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(shape=SHAPE, seed=3)


def direct(executor: InProcessExecutor, model: str, *images: np.ndarray, **kw: Any) -> np.ndarray:
    """The model's label map computed straight from arrays (no DICOM involved)."""
    resolved = executor.catalog.resolve(model)
    stage = resolved.default_args.for_stage(0)
    prediction = executor.cache.predict(
        resolved.model_dir,
        [np.asarray(i, dtype=np.float32) for i in images],
        kw.pop("spacing", (6.0, 6.0, 8.0)),
        folds=(0,),
        tile_step_size=stage.tile_step_size,
        tta=kw.pop("tta", stage.tta),
        **kw,
    )
    return prediction.labels


def oblique(deg_x: float, deg_y: float) -> tuple[float, ...]:
    ax, ay = np.radians([deg_x, deg_y])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    m = rx @ ry
    return (*m[:, 0], *m[:, 1])


CASES: dict[str, dict[str, Any]] = {
    "axial": {},
    "oblique": {"orientation": oblique(20.0, -12.0), "origin": (-95.5, 40.0, 310.0)},
    "shuffled": {"shuffle_names": True},
    "rle": {"transfer_syntax": RLELossless},
    "jpeg-ls": {"transfer_syntax": JPEGLSLossless},
    "enhanced": {"enhanced": True},
}


@pytest.mark.parametrize("case", list(CASES))
def test_seg_round_trip_in_source_geometry(
    case: str, executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    files = write_ct_series(phantom, tmp_path / "in", **CASES[case])
    if case == "shuffled":
        files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    result = executor.run(InferenceRequest(inputs=[files], models=["body"], output_dir=tmp_path / "out"))
    expected = direct(executor, "organ", phantom.image)
    assert len(np.unique(expected)) > 1
    [seg] = result.outputs
    assert seg.kind == "seg" and seg.path == tmp_path / "out" / "seg-organ.dcm"
    ds = dcmread(seg.path, stop_before_pixels=True)
    assert (seg.sop_instance_uid, seg.sop_class_uid) == (ds.SOPInstanceUID, ds.SOPClassUID)
    geometry = load_series(files).volume.geometry
    np.testing.assert_array_equal(seg_labels_on_grid(seg.path, geometry), expected)
    report = dciodvfy(seg.path)
    assert report.errors == [], report.output
    assert not result.empty
    assert set(result.timings) >= {"load", "inference", "postprocess", "seg_write", "total"}


def test_same_input_twice_gives_the_same_seg_uids(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    files = write_ct_series(phantom, tmp_path / "in")
    first = executor.run(InferenceRequest(inputs=[files], models=["organ"], output_dir=tmp_path / "a"))
    second = executor.run(InferenceRequest(inputs=[files[::-1]], models=["organ"], output_dir=tmp_path / "b"))
    a, b = (dcmread(r.outputs[0].path, stop_before_pixels=True) for r in (first, second))
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    other = executor.run(InferenceRequest(inputs=[files], models=["lesion"], output_dir=tmp_path / "c"))
    c = dcmread(other.outputs[0].path, stop_before_pixels=True)
    assert c.SOPInstanceUID != a.SOPInstanceUID and c.SeriesInstanceUID != a.SeriesInstanceUID


def test_output_changing_args_and_cascades_get_their_own_uids(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    files = write_ct_series(phantom, tmp_path / "in")

    def uids(name: str, models: list[str], **args: Any) -> tuple[str, str]:
        result = executor.run(
            InferenceRequest(inputs=[files], models=models, args=args, output_dir=tmp_path / name)
        )
        ds = dcmread(result.outputs[-1].path, stop_before_pixels=True)
        return str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)

    plain = uids("plain", ["organ"])
    assert uids("defaults-spelled-out", ["organ"], tile_step_size=1.0, use_folds=[0]) == plain
    with_tta = uids("tta", ["organ"], tta=True)
    assert with_tta[0] != plain[0] and with_tta[1] != plain[1]
    assert uids("tta-again", ["organ"], tta=True) == with_tta
    lesion = uids("lesion", ["lesion"])
    after_organ = uids("cascade", ["organ", "lesion"])
    assert after_organ != lesion and uids("cascade-again", ["organ", "lesion"]) == after_organ


def test_empty_result_skip_or_empty_seg(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    files = write_ct_series(phantom, tmp_path / "in")
    skipped = executor.run(
        InferenceRequest(
            inputs=[files], models=["nothing"], output_dir=tmp_path / "skip", empty_result="skip"
        )
    )
    assert skipped.empty and skipped.outputs == []
    empty = executor.run(InferenceRequest(inputs=[files], models=["nothing"], output_dir=tmp_path / "seg"))
    assert empty.empty and [o.kind for o in empty.outputs] == ["seg"]
    geometry = load_series(files).volume.geometry
    assert not seg_labels_on_grid(empty.outputs[0].path, geometry).any()
    assert dciodvfy(empty.outputs[0].path).errors == []


def test_nifti_outputs(executor: InProcessExecutor, phantom: Phantom, tmp_path: Path) -> None:
    files = write_ct_series(phantom, tmp_path / "in", orientation=oblique(10.0, 5.0))
    result = executor.run(
        InferenceRequest(
            inputs=[files],
            models=["organ"],
            output_dir=tmp_path / "out",
            nifti=True,
            nifti_probabilities=True,
            nifti_inputs=True,
        )
    )
    kinds = {o.kind: o.path for o in result.outputs}
    assert set(kinds) == {"seg", "nifti_labels", "nifti_probabilities", "nifti_input"}
    geometry = load_series(files).volume.geometry
    labels = sitk.ReadImage(str(kinds["nifti_labels"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), direct(executor, "organ", phantom.image))
    np.testing.assert_allclose(labels.GetDirection(), geometry.direction, atol=1e-5)
    np.testing.assert_allclose(labels.GetOrigin(), geometry.origin, atol=1e-3)
    probs = sitk.GetArrayFromImage(sitk.ReadImage(str(kinds["nifti_probabilities"])))
    assert probs.shape == (4, *SHAPE)
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(kinds["nifti_input"])))
    np.testing.assert_array_equal(image, phantom.image.astype(np.float32))


def test_rtstruct_and_probability_seg_outputs(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    from inference.rtstruct import rasterise

    files = write_ct_series(phantom, tmp_path / "in", orientation=oblique(10.0, 5.0))
    result = executor.run(
        InferenceRequest(
            inputs=[files],
            models=["organ"],
            output_dir=tmp_path / "out",
            args={"save_rt_struct_output": True, "save_proba_map": True},
        )
    )
    dicom = [(o.kind, o.path.name, dcmread(o.path)) for o in result.outputs if o.sop_class_uid]
    assert [(kind, name) for kind, name, _ in dicom] == [
        ("seg", "seg-organ.dcm"),
        ("rtstruct", "rtstruct-organ.dcm"),
        ("seg", "seg-organ-probabilities.dcm"),
    ]
    for output in result.outputs:
        if output.sop_class_uid:
            assert dciodvfy(output.path).errors == [], output.path
    expected = direct(executor, "organ", phantom.image)
    geometry = load_series(files).volume.geometry
    back = rasterise(dicom[1][2], geometry)
    for value in np.unique(expected[expected > 0]):
        a, b = back == value, expected == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95
    assert dicom[2][2].SegmentationType == "FRACTIONAL"
    assert len({d.SOPInstanceUID for _, _, d in dicom}) == 3


def test_cascade_intersect(executor: InProcessExecutor, phantom: Phantom, tmp_path: Path) -> None:
    files = write_ct_series(phantom, tmp_path / "in")
    done = executor._pipeline.segment(
        InferenceRequest(
            inputs=[files],
            models=["organ", "lesion"],
            output_dir=tmp_path / "out",
            args={"min_intersection": 0.5},
        )
    )
    organ = direct(executor, "organ", phantom.image)
    lesion = direct(executor, "lesion", phantom.image)
    expected = intersect_components(lesion, organ > 0, 0.5)
    np.testing.assert_array_equal(done.results[0].labels, organ)
    np.testing.assert_array_equal(done.labels, expected)


def test_cascade_crop_with_a_mask_input_inserts_the_referenced_model(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    files = write_ct_series(phantom, tmp_path / "in")
    request = InferenceRequest(
        inputs=[files],
        models=["two"],
        output_dir=tmp_path / "out",
        stage_inputs=[["0", "from:body=2"]],
        args={"cascade_mode": "crop", "crop_padding": 2},
    )
    done = executor._pipeline.segment(request)
    assert [(s.model, s.inserted) for s in done.stages] == [("organ", True), ("two", False)]
    organ = direct(executor, "organ", phantom.image)
    liver = organ == 2
    z, y, x = (np.flatnonzero(liver.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    box = tuple(
        slice(max(0, int(v[0]) - 2), min(n, int(v[-1]) + 3)) for v, n in zip((z, y, x), SHAPE, strict=True)
    )
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[box] = direct(executor, "two", phantom.image[box], liver[box])
    np.testing.assert_array_equal(done.labels, expected)


def test_each_stage_uses_its_own_arguments(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    files = write_ct_series(phantom, tmp_path / "in")
    request = InferenceRequest(
        inputs=[files],
        models=["organ", "lesion"],
        output_dir=tmp_path / "out",
        args={"min_intersection": [0.1, 0.7]},
    )
    stages = executor._pipeline.plan(request)
    # tta from each model's default_args; min_intersection from the request, per stage
    assert [(s.args.tta, s.args.min_intersection) for s in stages] == [(False, 0.1), (True, 0.7)]
    counts = {}
    for model in ("organ", "lesion"):
        warm = executor.cache.get(executor.catalog.resolve(model).model_dir, (0,))
        calls = [0]
        warm.predictor.network.register_forward_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        counts[model] = calls
    executor._pipeline.segment(request)
    assert (counts["organ"][0], counts["lesion"][0]) == (1, 8)  # one tile; mirroring only for lesion


def test_extra_channel_on_another_grid_is_resampled(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    first = write_ct_series(phantom, tmp_path / "a")
    second = write_ct_series(phantom, tmp_path / "b", origin=(0.0, 0.0, 0.0), spacing=(6.0, 6.0, 8.0))
    shifted = write_ct_series(phantom, tmp_path / "c", origin=(3.0, 0.0, 0.0))
    same = executor._pipeline.segment(
        InferenceRequest(inputs=[first, second], models=["two"], output_dir=tmp_path / "o1")
    )
    assert not any("resampled" in w for w in same.warnings)
    np.testing.assert_array_equal(same.labels, direct(executor, "two", phantom.image, phantom.image))
    moved = executor._pipeline.segment(
        InferenceRequest(inputs=[first, shifted], models=["two"], output_dir=tmp_path / "o2")
    )
    assert any("resampled onto the grid" in w for w in moved.warnings)
    assert moved.labels.shape == SHAPE
    image = phantom.image.astype(np.float32)
    np.testing.assert_allclose(
        moved.arrays[1][:, :, 1:], 0.5 * image[:, :, :-1] + 0.5 * image[:, :, 1:], atol=1e-3
    )


def test_errors_name_the_problem_before_reading_files(executor: InProcessExecutor, tmp_path: Path) -> None:
    missing = [tmp_path / "missing.dcm"]
    with pytest.raises(UnknownModelError, match="'liver-xl'"):
        executor.run(InferenceRequest(inputs=[missing], models=["liver-xl"], output_dir=tmp_path))
    with pytest.raises(ArgsError, match="tile_step_size"):
        executor.run(
            InferenceRequest(
                inputs=[missing], models=["organ"], args={"tile_step_size": 2}, output_dir=tmp_path
            )
        )
    with pytest.raises(ArgsError, match="fold 3 not found"):
        executor.run(
            InferenceRequest(inputs=[missing], models=["organ"], args={"use_folds": [3]}, output_dir=tmp_path)
        )
    with pytest.raises(ArgsError, match="2 per-stage values but the cascade has 1"):
        executor.run(
            InferenceRequest(
                inputs=[missing],
                models=["organ"],
                args={"cascade_mode": ["crop", "intersect"]},
                output_dir=tmp_path,
            )
        )
    with pytest.raises(ArgsError, match=r"checkpoint_best\.pth"):
        executor.run(
            InferenceRequest(
                inputs=[missing],
                models=["organ"],
                args={"checkpoint_name": "checkpoint_best.pth"},
                output_dir=tmp_path,
            )
        )
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(SeriesError):
        executor.run(InferenceRequest(inputs=[[junk]], models=["organ"], output_dir=tmp_path))


def test_a_multi_series_segs_uids_follow_every_input_series_and_its_content(
    executor: InProcessExecutor, phantom: Phantom, tmp_path: Path
) -> None:
    first = write_ct_series(phantom, tmp_path / "a")
    late = write_ct_series(phantom, tmp_path / "b")
    other_late = write_ct_series(phantom, tmp_path / "c")

    def uids(name: str, second: list[Path], versions: list[str] | None = None) -> tuple[str, str]:
        request = InferenceRequest(
            inputs=[first, second], models=["two"], output_dir=tmp_path / name, input_versions=versions
        )
        ds = dcmread(executor.run(request).outputs[0].path, stop_before_pixels=True)
        return str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)

    plain = uids("plain", late)
    assert uids("again", late) == plain
    changed = uids("other-second-series", other_late)  # same first series, another second one
    assert changed[0] != plain[0] and changed[1] != plain[1]
    v1 = uids("v1", late, ["t2-content", "adc-content"])
    assert uids("v1-again", late, ["t2-content", "adc-content"]) == v1
    assert uids("v2", late, ["t2-content", "adc-changed"])[0] != v1[0]
