"""Reference-output test: for a phantom CT written as DICOM, our pipeline's label map (in memory and
read back from the SEG) is voxel-identical to what nnU-Net's own ``nnUNetPredictor`` produces when
it is set up independently here and fed the same series read by SimpleITK's ImageSeriesReader.

Runs with the demo model (dicom_node/demo/data, :mod:`dicom_node.demo.bundled`) and always with a
random-weights stand-in, so the plumbing is proven even without the demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dicom_node.demo.bundled import demo_model_spec
from dicom_node.demo.phantom import make_phantom, write_ct_series
from inference.api import InferenceRequest
from inference.executor import InProcessExecutor
from inference.series import load_series
from inference.spec import ResolvedModel, load_model_spec
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid

DEMO_SPEC = demo_model_spec()


def read_with_simpleitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def rotated_axial(deg_x: float, deg_y: float) -> tuple[float, ...]:
    ax, ay = np.radians([deg_x, deg_y])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    m = rx @ ry
    return (*m[:, 0], *m[:, 1])


def nnunet_reference(model: ResolvedModel, image: sitk.Image) -> np.ndarray:
    """nnU-Net's own predictor, configured from the model's default arguments, nothing of ours."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    args = model.default_args
    folds = tuple(args.use_folds) if args.use_folds != "all" else None
    predictor = nnUNetPredictor(
        tile_step_size=args.tile_step_size,
        use_mirroring=args.tta,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(model.model_dir), folds, args.checkpoint_name)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing_zyx = list(image.GetSpacing())[::-1]
    return np.asarray(
        predictor.predict_single_npy_array(array[None], {"spacing": spacing_zyx}, None, None, False)
    )


def demo_spec() -> Path | None:
    if not DEMO_SPEC.is_file():
        return None
    try:
        catalog = load_model_spec(DEMO_SPEC)
        catalog.resolve("demo")
    except Exception:
        return None
    return DEMO_SPEC


@pytest.fixture(scope="module", params=["stand-in", "demo"])
def spec_and_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    if request.param == "demo":
        path = demo_spec()
        if path is None:
            pytest.skip("the demo model (dicom_node/demo/data/models) is not in this checkout")
        return path, "demo"
    root = tmp_path_factory.mktemp("standin")
    spec = write_random_spec(
        root, {"standin": {"seed": 11, "patch_size": (32, 64, 64), "default_args": {"tile_step_size": 0.5}}}
    )
    return spec, "standin"


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_label_map_matches_nnunet_own_predictor(
    spec_and_model: tuple[Path, str], orientation: str, tmp_path: Path
) -> None:
    spec, model_id = spec_and_model
    phantom = make_phantom(shape=(32, 64, 64), seed=21)
    cosines = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0) if orientation == "axial" else rotated_axial(15.0, -10.0)
    folder = tmp_path / "ct"
    files = write_ct_series(phantom, folder, shuffle_names=True, orientation=cosines)

    executor = InProcessExecutor(spec, device="cpu", num_threads=2)
    model = executor.catalog.resolve(model_id)
    request = InferenceRequest(inputs=[files], models=[model_id], output_dir=tmp_path / "out")
    ours = executor._pipeline.segment(request).labels
    result = executor.run(request)

    reference = nnunet_reference(model, read_with_simpleitk(folder))
    assert reference.shape == ours.shape
    assert len(np.unique(reference)) > 1, "the reference found a single label: a weak test"
    np.testing.assert_array_equal(ours, reference)
    geometry = load_series(files).volume.geometry
    np.testing.assert_array_equal(seg_labels_on_grid(result.outputs[0].path, geometry), reference)
