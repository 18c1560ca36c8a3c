"""Time a multi-part TotalSegmentator task: the node (warm, in process) against the ``TotalSegmentator``
command on the same machine, with the same stand-in weights, and state the node's peak memory.

Stand-in weights (tests/support/totalseg_weights.py): random nnU-Net models in TotalSegmentator's exact
folder layout, tiny networks (so the figures show the pipeline around nnU-Net - reorientation, resampling,
file round trips, worker processes, model loading - far more than network compute; real weights add the
same network time to both sides). One phantom CT is written as DICOM (for the node) and as NIfTI (for the
command, converted by SimpleITK).

- node, cold: a fresh process builds the executor and runs the task once (imports, every part loaded,
  DICOM read, SEG written);
- node, warm: the same process runs it again ``--repeats`` times (parts stay warm): DICOM in, SEG out;
- ``TotalSegmentator -i ct.nii.gz -o seg.nii.gz --ml -ta <task> -d <device>``: a fresh process per run,
  as a user or a PACS script would call it (its default worker counts).

Peak memory: the node process's peak RSS (``ru_maxrss``) and the command's (largest of its processes).
Also checks that both label maps are voxel-identical.

    .venv/bin/python benchmarks/bench_totalseg.py [--shape 300 512 512] [--task total] [--repeats 2]
        [--device cpu|cuda] [--patch 64] [--skip-command]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def node_child(args: argparse.Namespace) -> None:
    """In a fresh process: cold run, warm runs, peak RSS; labels saved for the comparison."""
    sys.path.insert(0, str(REPO))
    from inference.executor import InferenceRequest, InProcessExecutor

    started = time.perf_counter()
    executor = InProcessExecutor(Path(args.spec), device=args.device, max_models=8)
    files = sorted(Path(args.dicom).glob("*.dcm"))
    request = InferenceRequest(inputs=[files], models=["ts"], output_dir=Path(args.out))
    result = executor.run(request)
    cold = time.perf_counter() - started
    warm = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        result = executor.run(request)
        warm.append(time.perf_counter() - t)
    if warm:
        np.save(Path(args.out) / "labels.npy", executor._pipeline.segment(request).labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings = result.timings
    print(json.dumps({"cold": cold, "warm": min(warm, default=None), "timings": timings, "peak_mib": peak}))


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB of the largest child process) of one command run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(after, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), help="CT (z, y, x) voxels")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.5), help="(x, y, z) mm")
    parser.add_argument("--task", default="total", help="a multi-part task: total or total_mr")
    parser.add_argument("--patch", type=int, default=64, help="stand-in models' patch size (cube)")
    parser.add_argument("--repeats", type=int, default=2, help="warm runs (0: cold run only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-command", action="store_true", help="time the node only")
    parser.add_argument("--child-node", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--dicom", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_node:
        node_child(args)
        return

    sys.path.insert(0, str(REPO))
    import SimpleITK as sitk
    import yaml

    from dicom_node.demo.phantom import make_phantom, write_ct_series
    from inference.series import load_series
    from tests.support.totalseg_weights import offline_home, write_task

    root = Path(tempfile.mkdtemp(prefix="bench_totalseg_"))
    t = time.perf_counter()
    weights = root / "weights"
    write_task(weights, args.task, patch_size=(args.patch,) * 3)
    phantom = make_phantom(shape=tuple(args.shape), spacing=tuple(args.spacing), seed=5)
    files = write_ct_series(phantom, root / "dicom")
    nifti = root / "ct.nii.gz"
    sitk.WriteImage(load_series(files).volume.to_sitk(), str(nifti))
    spec = root / "spec.yaml"
    entry = {"id": "ts", "totalseg_task": args.task, "min_mem": 0}
    spec.write_text(yaml.safe_dump({"model_folder": "models", "models": [entry]}))
    print(
        f"setup {time.perf_counter() - t:.1f} s: CT {tuple(args.shape)} voxels at {tuple(args.spacing)} mm, "
        f"task {args.task}"
    )

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOTALSEG_WEIGHTS_PATH": str(weights),
        "TOTALSEG_HOME_DIR": str(offline_home(root / "home")),
    }
    node_cmd = [sys.executable, __file__, "--child-node", "--spec", str(spec), "--dicom", str(root / "dicom")]
    node_cmd += ["--out", str(root / "node"), "--repeats", str(args.repeats), "--device", args.device]
    proc = subprocess.run(node_cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"node run failed:\n{proc.stderr[-3000:]}")
    node = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [("node, cold (fresh process, DICOM in, SEG out)", node["cold"], node["peak_mib"])]
    if node["warm"] is not None:
        rows.append(("node, warm (DICOM in, SEG out)", node["warm"], None))

    command_seconds = None
    if not args.skip_command:
        device = "gpu" if args.device.startswith("cuda") else args.device
        cmd = [str(BIN / "TotalSegmentator"), "-i", str(nifti), "-o", str(root / "ts.nii.gz"), "--ml"]
        cmd += ["-ta", args.task, "-d", device, "-q"]
        runs = [measured(cmd, env) for _ in range(args.repeats)]
        command_seconds = min(r[0] for r in runs)
        rows.append(
            (
                "TotalSegmentator command (fresh process, NIfTI in and out)",
                command_seconds,
                max(r[1] for r in runs),
            )
        )

    print(f"\n{'run':60s} {'seconds':>9s} {'peak RSS MiB':>13s}")
    for name, seconds, peak in rows:
        print(f"{name:60s} {seconds:9.2f} {'' if peak is None else f'{peak:13.0f}'}")
    print(f"node stages (last run): {json.dumps({k: round(v, 2) for k, v in node['timings'].items()})}")
    if command_seconds is not None and node["warm"] is not None:
        print(f"ratio command / node warm: {command_seconds / node['warm']:.2f}x")
        import nibabel as nib

        theirs = np.asarray(nib.load(root / "ts.nii.gz").dataobj).astype(np.uint8).transpose(2, 1, 0)
        ours = np.load(root / "node" / "labels.npy")
        print(f"label maps voxel-identical: {bool(np.array_equal(ours, theirs))}")
    print(f"(work folder {root})")


if __name__ == "__main__":
    main()
