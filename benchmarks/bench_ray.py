"""Jobs per minute on a local Ray cluster (1 and 2 CPU actors) against the in-process executor.

Starts a Ray cluster like the tests do (``ray start --head`` plus one worker node, one CPU each, 100 MB
object store, no dashboard), writes ``--series`` phantom CT series (``--shape``, default the demo's
32x64x64) as DICOM, and runs them through each executor from as many threads as it keeps jobs in flight:

- ``local``: :class:`inference.executor.InProcessExecutor` on the CPU (torch uses every core), one
  worker thread (the node's default) and two;
- ``ray, 1 actor`` and ``ray, 2 actors``: :class:`inference.ray_executor.RayExecutor` (series bytes
  through the object store), ``max_in_flight`` twice the actors.

Each executor first runs as many series as it has threads, at once (cold: actor start and model
load, printed), then the timed batch. Prints wall seconds, jobs per minute and the ratio to
``local`` (1 thread), and checks every executor made the same SEG UIDs.

    .venv/bin/python benchmarks/bench_ray.py [--series 8] [--shape 32 64 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def write_series(root: Path, count: int, shape: tuple[int, int, int]) -> list[list[Path]]:
    from dicom_node.demo.phantom import make_phantom
    from dicom_node.demo.phantom_dicom import write_ct_series

    return [write_ct_series(make_phantom(shape=shape, seed=i), root / f"ct{i}") for i in range(count)]


def timed_batch(
    executor: Any, series: list[list[Path]], threads: int, out: Path
) -> tuple[float, float, list[str]]:
    """(cold seconds of the warm-up, wall seconds of the batch, SEG UIDs in series order). The warm-up
    runs ``threads`` jobs at once, so every actor has loaded the model before the batch."""
    from inference.api import InferenceRequest

    def run(index: int, files: list[Path], tag: str) -> str:
        request = InferenceRequest(inputs=[files], models=["demo"], output_dir=out / f"{tag}{index}")
        result = executor.run(request)
        return next(str(o.sop_instance_uid) for o in result.outputs if o.kind == "seg")

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: run(item[0], item[1], "warm"), enumerate(series[:threads])))
    cold = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        uids = list(pool.map(lambda item: run(item[0], item[1], "job"), enumerate(series)))
    return cold, time.perf_counter() - started, uids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64))
    args = parser.parse_args()

    from dicom_node.demo.bundled import demo_model_spec
    from inference.executor import InProcessExecutor
    from inference.ray_executor import RayExecutor, RaySettings
    from tests.support.ray_cluster import remove_cluster, start_cluster

    spec = demo_model_spec()
    rows: list[tuple[str, float, float, list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        series = write_series(root / "in", args.series, tuple(args.shape))

        local = InProcessExecutor(spec, device="cpu")
        for threads in (1, 2):
            cold, wall, uids = timed_batch(local, series, threads, root / f"local{threads}")
            rows.append((f"local, {threads} worker thread(s)", cold, wall, uids))
        local.close()

        cluster = start_cluster(workers=1)
        try:
            for actors in (1, 2):
                settings = RaySettings(
                    spec_path=spec, address=cluster.address, actors=actors, max_in_flight=2 * actors
                )
                executor = RayExecutor(settings)
                try:
                    cold, wall, uids = timed_batch(executor, series, 2 * actors, root / f"ray{actors}")
                finally:
                    executor.close()
                rows.append((f"ray, {actors} CPU actor(s), {2 * actors} in flight", cold, wall, uids))
        finally:
            remove_cluster(cluster)

    base = rows[0][2]
    print(f"{args.series} series {tuple(args.shape)}, demo model, CPU; {os.cpu_count()} CPU(s) here")
    print(f"{'executor':<36} {'cold s':>7} {'batch s':>8} {'jobs/min':>9} {'vs local':>9}")
    for name, cold, wall, _ in rows:
        print(f"{name:<36} {cold:7.1f} {wall:8.1f} {60 * args.series / wall:9.1f} {base / wall:9.2f}")
    same = all(r[3] == rows[0][3] for r in rows)
    print(f"same SEG UIDs from every executor: {same}")


if __name__ == "__main__":
    main()
