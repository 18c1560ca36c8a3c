"""Latency of the node: time from the last instance acknowledged to the SEG accepted at the destination,
split into stages (completion/quiet period, queue, load, inference, postprocess, SEG writing, other job
time, sending), for phantom CT series sent over DICOM.

    .venv/bin/python benchmarks/bench_latency.py [--runs 3] [--quiet-seconds 2] [--device auto]

The node runs in-process (``dicom_node.node.Node``) on a free port with the bundled demo model; the
destination is a built-in storage SCP. Each run sends a new phantom series (``dicom_node.net.scu``) and
waits for its SEG. Stage times come from the node's journal (job timings and timestamps) and the
destination's acceptance time. Run 1 includes loading the model (cold predictor); later runs are warm.
By default completion is by quiet period; ``--expected-count`` completes as soon as all instances
announced by ImagesInAcquisition have arrived.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pydicom.uid import SegmentationStorage, generate_uid

from dicom_node.config import load_config
from dicom_node.demo.latency import SeriesLatency, series_latency
from dicom_node.demo.phantom import make_phantom, write_ct_series
from dicom_node.demo.store_receiver import ReceivedInstance, StoreReceiver
from dicom_node.net.peers import Peer
from dicom_node.net.scu import send_files
from dicom_node.node import Node
from dicom_node.process import configure_process

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_latency")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="series to send, one after another (default 3)")
    p.add_argument("--quiet-seconds", type=float, default=2.0, help="the rule's quiet period (default 2)")
    p.add_argument("--expected-count", action="store_true", help="complete on ImagesInAcquisition")
    p.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--model-spec", type=Path, default=REPO_ROOT / "model-serve-spec.yaml")
    p.add_argument("--model", default="demo")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each SEG")
    return p.parse_args(argv)


def write_node_config(args: argparse.Namespace, workdir: Path, receiver_port: int) -> Path:
    config = {
        "node": {"ae_title": "NNUNET", "host": "127.0.0.1", "port": 0, "storage_dir": "storage"},
        "model_spec": str(args.model_spec.resolve()),
        "destinations": {"dest": {"ae_title": "BENCHDEST", "host": "127.0.0.1", "port": receiver_port}},
        "rules": [
            {
                "name": "bench",
                "match": {"modality": "CT"},
                "models": [args.model],
                "destinations": ["dest"],
                "series_quiet_seconds": args.quiet_seconds,
                "use_expected_count": bool(args.expected_count),
            }
        ],
        "inference": {"device": args.device},
    }
    path = workdir / "node.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _seg_for(series_uid: str, items: list[ReceivedInstance]) -> ReceivedInstance | None:
    for item in items:
        if item.sop_class_uid != SegmentationStorage:
            continue
        ds = dcmread(item.path, stop_before_pixels=True)
        if any(str(s.SeriesInstanceUID) == series_uid for s in ds.get("ReferencedSeriesSequence", [])):
            return item
    return None


def one_run(
    args: argparse.Namespace, node: Node, receiver: StoreReceiver, workdir: Path, run: int
) -> tuple[SeriesLatency, float]:
    series_uid = generate_uid()
    phantom = make_phantom(shape=tuple(args.shape), seed=5000 + run)
    paths = write_ct_series(
        phantom, workdir / f"ct-{run}", series_uid=series_uid, series_description="Bench CT"
    )
    t0 = time.monotonic()
    results = send_files(paths, Peer(node.ae_title, "127.0.0.1", node.port), calling_ae="BENCHSCU")
    send_seconds = time.monotonic() - t0
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(
            f"run {run}: {len(failed)} instance(s) not accepted: {failed[0].error or failed[0].status}"
        )
    deadline = time.monotonic() + args.timeout
    seg: ReceivedInstance | None = None
    while seg is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run}: no SEG within {args.timeout:.0f} s")
        receiver.wait_for(lambda items: _seg_for(series_uid, items) is not None, timeout=1.0)
        seg = _seg_for(series_uid, receiver.received)
    latency = None
    while latency is None or latency.delivery_done_at is None:
        assert node.journal is not None
        latency = series_latency(node.journal, series_uid, accepted_at=seg.accepted_at)
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run}: the journal does not show the delivery")
        time.sleep(0.02)
    return latency, send_seconds


def table(runs: list[tuple[SeriesLatency, float]]) -> tuple[list[str], list[list[str]]]:
    """Rows of stage timings (seconds), one column per run, plus the median of the warm runs."""
    header = ["stage"] + [f"run {i + 1}{' (cold)' if i == 0 else ''}" for i in range(len(runs))]
    warm = runs[1:] or runs
    header.append("median warm" if len(runs) > 1 else "median")
    names: list[str] = []
    per_run: list[dict[str, float]] = []
    for latency, send_seconds in runs:
        stages = dict(latency.stages())
        stages = {"send (client, not in total)": send_seconds, **stages}
        stages["TOTAL last ack -> SEG accepted"] = latency.total or float("nan")
        per_run.append(stages)
        names += [n for n in stages if n not in names]
    rows = []
    for name in names:
        values = [r.get(name) for r in per_run]
        warm_values = [v for v in values[len(runs) - len(warm) :] if v is not None]
        median = statistics.median(warm_values) if warm_values else None
        rows.append([name] + [f"{v:.3f}" if v is not None else "-" for v in [*values, median]])
    return header, rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    sys.stdout.write(line + "\n" + "-" * len(line) + "\n")
    for row in rows:
        cells = (
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        sys.stdout.write("  ".join(cells) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        with StoreReceiver(workdir / "received", ae_title="BENCHDEST") as receiver:
            node = Node(load_config(write_node_config(args, workdir, receiver.port)))
            node.start()
            try:
                runs = [one_run(args, node, receiver, workdir, run) for run in range(args.runs)]
            finally:
                node.stop()
    z, y, x = args.shape
    completion = "expected count" if args.expected_count else f"quiet period {args.quiet_seconds:g} s"
    sys.stdout.write(
        f"latency of the node, seconds: {runs[0][0].instances}-instance phantom CT ({z}x{y}x{x}), "
        f"model {args.model}, device {args.device}, completion by {completion}\n\n"
    )
    header, rows = table(runs)
    print_table(header, rows)
    if args.json is not None:
        data: dict[str, Any] = {
            "shape": [z, y, x],
            "completion": completion,
            "runs": [
                {
                    "stages": dict(lat.stages()),
                    "total": lat.total,
                    "send_seconds": send,
                    "trigger": lat.trigger,
                }
                for lat, send in runs
            ],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
