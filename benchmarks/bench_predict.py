"""Time our prediction path against nnU-Net's own ``nnUNetv2_predict`` on the same phantom CT.

One phantom CT is written as DICOM (for us) and as NIfTI (for nnU-Net, converted by SimpleITK).
Then, with the same model, folds, step size and no TTA, on the same device:

- ``dicom-node predict`` (a fresh process: imports, model load, DICOM read, inference, SEG write);
- ``nnUNetv2_predict`` (a fresh process: imports, model load, NIfTI read, inference, NIfTI export;
  its own worker processes, default -npp/-nps);
- our in-process executor, warm (model already loaded): DICOM in, SEG out;
- nnU-Net's predictor, warm, on the array alone (``predict_single_npy_array``): the compute floor.

Prints best-of-``--repeats`` seconds, ratios, and whether both label maps are voxel-identical.
Uses the demo model (dicom_node/demo/data/models/Dataset801_Phantom) when the checkout has it, else a
random-weights stand-in with the same layout (timings then say nothing about segmentation quality).

    .venv/bin/python benchmarks/bench_predict.py [--shape 64 128 128] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def run_checked(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def model_setup(root: Path) -> tuple[Path, str, Path, int]:
    """(spec path, model id, nnUNet_results folder, dataset id)."""
    sys.path.insert(0, str(REPO))
    from dicom_node.demo.bundled import demo_model_dir, demo_model_spec, demo_models_root

    if (demo_model_dir() / "fold_0").is_dir():
        return demo_model_spec(), "demo", demo_models_root(), 801
    from tests.support.random_model import write_random_spec

    print("demo model not in this checkout: using a random-weights stand-in (patch 64x128x128)")
    spec = write_random_spec(
        root / "results",
        {"Dataset990_Random": {"patch_size": (64, 128, 128), "default_args": {"tile_step_size": 0.5}}},
    )
    # write_random_spec puts each model at models/<id>/<trainer__plans__config>; nnU-Net wants
    # <nnUNet_results>/<DatasetXXX_Name>/<trainer__plans__config>
    return spec, "Dataset990_Random", root / "results" / "models", 990


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128), metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    from dicom_node.demo.phantom import make_phantom, write_ct_series
    from inference.api import InferenceRequest
    from inference.executor import InProcessExecutor

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        spec, model_id, results, dataset_id = model_setup(root)
        executor = InProcessExecutor(spec, device=args.device)
        model = executor.catalog.resolve(model_id)
        stage = model.default_args.for_stage(0)
        folds = [str(f) for f in model.check_stage(stage)]
        step = stage.tile_step_size
        print(
            f"model {model_id}: folds {' '.join(folds)}, {stage.checkpoint_name}, step {step}, "
            f"no TTA, {args.device}"
        )

        phantom = make_phantom(shape=args.shape, seed=7)
        dicom_dir = root / "dicom"
        files = write_ct_series(phantom, dicom_dir)
        nifti_in = root / "nifti_in"
        nifti_in.mkdir()
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom_dir)))
        sitk.WriteImage(reader.Execute(), str(nifti_in / "case_0000.nii.gz"))
        print(f"phantom {tuple(args.shape)} voxels, {len(files)} DICOM files")

        common = [
            "--no-tta",
            "--tile-step-size",
            str(step),
            "--folds",
            *folds,
            "--checkpoint",
            stage.checkpoint_name,
        ]
        ours_out = root / "ours"

        def ours_cli() -> None:
            shutil.rmtree(ours_out, ignore_errors=True)
            run_checked(
                [str(BIN / "dicom-node"), "--log-level", "WARNING", "predict", "--spec", str(spec),
                 "--model", model_id, "--input", str(dicom_dir), "--output", str(ours_out), "--nifti",
                 "--device", args.device, *common]
            )  # fmt: skip

        theirs_out = root / "theirs"
        env = dict(
            os.environ, nnUNet_results=str(results), nnUNet_raw=str(root), nnUNet_preprocessed=str(root)
        )

        def nnunet_cli() -> None:
            shutil.rmtree(theirs_out, ignore_errors=True)
            run_checked(
                [str(BIN / "nnUNetv2_predict"), "-i", str(nifti_in), "-o", str(theirs_out),
                 "-d", str(dataset_id), "-c", "3d_fullres", "-f", *folds, "-chk", stage.checkpoint_name,
                 "-step_size", str(step),
                 "--disable_tta", "-device", args.device, "--disable_progress_bar"],
                env=env,
            )  # fmt: skip

        request = InferenceRequest(
            inputs=[files],
            models=[model_id],
            args={"tta": False, "tile_step_size": step},
            output_dir=root / "warm",
        )
        executor.run(request)  # warm-up: loads the model

        array = phantom.image.astype(np.float32)[None]
        warm = executor.cache.get(model.model_dir, model.check_stage(stage), stage.checkpoint_name)
        spacing_zyx = list(phantom.spacing)[::-1]

        def nnunet_warm() -> None:
            warm.predictor.predict_single_npy_array(array, {"spacing": spacing_zyx}, None, None, False)

        timings = {
            "dicom-node predict (new process)": best_of(args.repeats, ours_cli),
            "nnUNetv2_predict (new process)": best_of(args.repeats, nnunet_cli),
            "InProcessExecutor.run, warm (DICOM -> SEG)": best_of(
                args.repeats, lambda: executor.run(request)
            ),
            "nnU-Net predictor, warm (array only)": best_of(args.repeats, nnunet_warm),
        }
        result = executor.run(request)

        ours_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ours_out / f"{model_id}.nii.gz")))
        theirs_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(theirs_out / "case.nii.gz")))
        width = max(len(k) for k in timings)
        print()
        for name, seconds in timings.items():
            print(f"{name:<{width}}  {seconds:7.2f} s")
        names = list(timings)
        print()
        print(f"CLI ratio  ours / nnUNetv2_predict        {timings[names[0]] / timings[names[1]]:.2f}")
        print(f"warm ratio ours / nnUNetv2_predict        {timings[names[2]] / timings[names[1]]:.2f}")
        print(f"warm overhead ours / array-only predictor {timings[names[2]] / timings[names[3]]:.2f}")
        print("warm run stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
        same = np.array_equal(ours_labels, theirs_labels)
        print(f"label maps identical: {same} ({int((ours_labels != theirs_labels).sum())} voxels differ)")


if __name__ == "__main__":
    main()
