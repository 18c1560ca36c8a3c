"""``dicom-node demo``: the whole path on one machine, with no set-up.

1. a node configuration is written to ``<workdir>/node.yaml`` (the model spec shipped in the package,
   :mod:`dicom_node.demo.bundled`; one rule for phantom CTs, short quiet period, completion by
   expected instance count);
2. a built-in receiver (:class:`~dicom_node.demo.store_receiver.StoreReceiver`) plays the PACS;
3. the node (:class:`~dicom_node.node.Node`) starts in-process on a free port;
4. a synthetic phantom CT (:mod:`dicom_node.demo.phantom`) is written and sent over DICOM;
5. the SEG is awaited at the receiver, checked (:mod:`dicom_node.demo.seg_check`, dciodvfy when present)
   and compared with the phantom's ground truth (Dice per label);
6. a PNG overlay and ``summary.json`` are written, and a :class:`DemoReport` is returned.

Work folder layout: ``node.yaml``, ``storage/`` (the node's storage_dir), ``ct/`` (the sent series),
``received/`` (what the receiver got), ``overlay.png``, ``summary.json``. Each run first removes these
(and only these) unless ``keep`` is set: then the node reuses its storage and journal, receives the
same series again and delivers the same SEG (same UIDs) once more.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pydicom.uid import SegmentationStorage, generate_uid

from dicom_node.config import load_config
from dicom_node.demo.bundled import demo_model_spec
from dicom_node.demo.latency import series_latency
from dicom_node.demo.overlay import segment_colors, write_overlay
from dicom_node.demo.seg_check import check_seg, dice_per_label
from dicom_node.demo.store_receiver import ReceivedInstance, StoreReceiver
from dicom_node.errors import DemoError, NodeError
from dicom_node.net.peers import Peer
from dicom_node.storage.journal import JobState
from inference.atomic import write_text_atomic

logger = logging.getLogger(__name__)

NODE_AE = "NNUNET"
RECEIVER_AE = "DEMOPACS"
SENDER_AE = "DEMOSCU"
_MARKER = ".dicom-node-demo"
_OWNED = ("node.yaml", "storage", "ct", "received", "overlay.png", "summary.json")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What to run. ``shape`` is ``(z, y, x)`` voxels, ``spacing`` ``(x, y, z)`` mm (the demo model's)."""

    workdir: Path = Path("demo-output")
    keep: bool = False
    model_spec: Path = field(default_factory=demo_model_spec)
    model: str = "demo"
    seed: int = 20240
    shape: tuple[int, int, int] = (32, 64, 64)
    spacing: tuple[float, float, float] = (6.0, 6.0, 8.0)
    quiet_seconds: float = 1.0
    device: str = "auto"
    timeout_seconds: float = 300.0
    validate: bool = True


@dataclass
class DemoReport:
    """The outcome of a demo run (also written as ``summary.json``)."""

    workdir: Path
    node_config: Path
    storage_dir: Path
    ct_dir: Path
    seg_path: Path
    overlay_path: Path
    instances_sent: int
    study_uid: str
    series_uid: str
    seg_sop_instance_uid: str
    timings: list[tuple[str, float]] = field(default_factory=list)
    dice: dict[str, float] = field(default_factory=dict)
    dciodvfy_errors: int | None = None
    dciodvfy_warnings: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["timings"] = [{"stage": s, "seconds": round(t, 4)} for s, t in self.timings]
        data["ok"] = self.ok
        return data

    def format(self) -> str:
        """A short human-readable summary."""
        lines = [f"dicom-node demo: {'OK' if self.ok else 'PROBLEMS'}", ""]
        lines.append("timings (seconds):")
        width = max((len(s) for s, _ in self.timings), default=10)
        lines += [f"  {s:<{width}}  {t:8.2f}" for s, t in self.timings]
        lines.append("")
        lines.append("Dice vs the phantom's ground truth:")
        lines += [f"  {name:<12} {value:.3f}" for name, value in self.dice.items()]
        lines.append("")
        if self.dciodvfy_errors is None:
            lines.append("dciodvfy: not installed (dicom3tools), skipped")
        else:
            lines.append(f"dciodvfy: {self.dciodvfy_errors} error(s), {self.dciodvfy_warnings} warning(s)")
        lines.append("")
        lines.append("files:")
        lines.append(f"  node config   {self.node_config}")
        lines.append(f"  node storage  {self.storage_dir}  (journal.sqlite, spool/, outputs/)")
        lines.append(f"  sent CT       {self.ct_dir}  ({self.instances_sent} instances)")
        lines.append(f"  received SEG  {self.seg_path}")
        lines.append(f"  overlay       {self.overlay_path}")
        lines.append(f"  summary       {self.workdir / 'summary.json'}")
        for problem in self.problems:
            lines.append(f"problem: {problem}")
        return "\n".join(lines)


def prepare_workdir(workdir: Path, keep: bool) -> Path:
    """Create the work folder, or clear what an earlier demo left there (only the demo's own entries).
    A non-empty folder that is not a demo work folder is refused."""
    workdir = workdir.resolve()
    if workdir.exists() and not workdir.is_dir():
        raise DemoError(f"work folder {workdir} exists and is not a folder")
    if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / _MARKER).exists():
        raise DemoError(
            f"work folder {workdir} is not empty and was not made by the demo; choose another --workdir"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).write_text("made by dicom-node demo\n")
    if not keep:
        for name in _OWNED:
            path = workdir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return workdir


def node_config(options: DemoOptions, receiver_port: int) -> dict[str, Any]:
    """The demo node's configuration (paths relative to the work folder, except the model spec)."""
    return {
        "node": {
            "ae_title": NODE_AE,
            "host": "127.0.0.1",
            "port": 0,
            "storage_dir": "storage",
            "min_free_disk_mb": 64,
        },
        "model_spec": str(options.model_spec.resolve()),
        "destinations": {"demo-pacs": {"ae_title": RECEIVER_AE, "host": "127.0.0.1", "port": receiver_port}},
        "rules": [
            {
                "name": "demo",
                "match": {"modality": "CT", "series_description": "(?i).*phantom.*"},
                "models": [options.model],
                "destinations": ["demo-pacs"],
                "series_quiet_seconds": options.quiet_seconds,
                "use_expected_count": True,
            }
        ],
        "inference": {"device": options.device},
    }


def demo_uids(seed: int) -> tuple[str, str]:
    """Study and series UIDs of the demo phantom: the same for the same seed (so ``--keep`` re-sends
    the same series)."""
    return (
        generate_uid(entropy_srcs=["dicom-node demo", str(seed), "study"]),
        generate_uid(entropy_srcs=["dicom-node demo", str(seed), "series"]),
    )


def _send(paths: Sequence[Path], peer: Peer) -> None:
    from dicom_node.net.scu import send_files

    failed = [r for r in send_files(list(paths), peer, calling_ae=SENDER_AE) if not r.ok]
    if failed:
        first = failed[0]
        reason = first.error or f"status 0x{first.status:04X}"
        raise DemoError(f"send: {len(failed)} of {len(paths)} instance(s) not accepted by the node: {reason}")


def _is_seg(items: list[ReceivedInstance]) -> bool:
    return any(i.sop_class_uid == SegmentationStorage for i in items)


def _wait_for_seg(receiver: StoreReceiver, node: Any, series_uid: str, timeout: float) -> ReceivedInstance:
    """Wait for a SEG at the receiver; fail early when the node records a failed job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = receiver.wait_for(_is_seg, timeout=0.5)
        if got is not None:
            return next(i for i in got if i.sop_class_uid == SegmentationStorage)
        journal = node.journal
        if journal is not None:
            failed = [
                j for j in journal.list_jobs(limit=20, state=JobState.FAILED) if j.series_uid == series_uid
            ]
            if failed:
                raise DemoError(f"inference failed: {failed[0].error or 'no reason recorded'}")
    raise DemoError(f"no SEG arrived at the receiver within {timeout:.0f} s (see: dicom-node status)")


def run_demo(options: DemoOptions, progress: Progress | None = None) -> DemoReport:
    """Run the demo (see the module docstring). Raises :class:`DemoError` naming the failed stage."""
    say = progress or (lambda _msg: None)
    from dicom_node.demo.phantom import LABEL_NAMES, make_phantom, write_ct_series

    workdir = prepare_workdir(options.workdir, options.keep)
    if not options.model_spec.is_file():
        raise DemoError(f"model spec {options.model_spec} not found (use --model-spec)")
    timings: list[tuple[str, float]] = []

    with StoreReceiver(workdir / "received", ae_title=RECEIVER_AE) as receiver:
        config_path = workdir / "node.yaml"
        write_text_atomic(config_path, yaml.safe_dump(node_config(options, receiver.port), sort_keys=False))
        try:
            config = load_config(config_path)
        except NodeError as exc:
            raise DemoError(f"node config: {exc}") from exc

        from dicom_node.node import Node

        node = Node(config)
        t0 = time.monotonic()
        say(f"starting the node ({NODE_AE}, model spec {options.model_spec})")
        try:
            node.start()
        except Exception as exc:
            node.stop()
            raise DemoError(f"node start: {exc}") from exc
        try:
            timings.append(("node start", time.monotonic() - t0))
            study_uid, series_uid = demo_uids(options.seed)
            phantom = make_phantom(shape=options.shape, spacing=options.spacing, seed=options.seed)
            paths = write_ct_series(
                phantom,
                workdir / "ct",
                study_uid=study_uid,
                series_uid=series_uid,
                series_description="Phantom CT (dicom-node demo)",
            )
            say(f"sending {len(paths)} phantom CT instances to {node.address}")
            t0 = time.monotonic()
            _send(paths, Peer(NODE_AE, "127.0.0.1", node.port))
            timings.append((f"send ({len(paths)} instances)", time.monotonic() - t0))
            say("waiting for the SEG at the built-in receiver")
            seg_item = _wait_for_seg(receiver, node, series_uid, options.timeout_seconds)
            latency = None
            deadline = time.monotonic() + 10
            while node.journal is not None and (latency is None or latency.delivery_done_at is None):
                latency = series_latency(node.journal, series_uid, accepted_at=seg_item.accepted_at)
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if latency is not None:
                timings += latency.stages()
                if latency.total is not None:
                    timings.append(("last instance acknowledged -> SEG accepted", latency.total))
        finally:
            node.stop()

    say("checking the SEG")
    check = check_seg(seg_item.path, paths, validate=options.validate)
    names = {v: n for v, n in check.segments.items()}
    truth_labels = [v for v in sorted(LABEL_NAMES) if v != 0]
    dice_raw = dice_per_label(check.labels, phantom.labels, truth_labels)
    dice = {names.get(v, LABEL_NAMES[v]): round(score, 4) for v, score in dice_raw.items()}
    seg_ds = dcmread(seg_item.path, stop_before_pixels=True)
    overlay = write_overlay(
        workdir / "overlay.png",
        phantom.image,
        check.labels,
        segment_colors(seg_ds),
        spacing=options.spacing,
        names=names,
    )
    report = DemoReport(
        workdir=workdir,
        node_config=config_path,
        storage_dir=Path(config.node.storage_dir),
        ct_dir=workdir / "ct",
        seg_path=seg_item.path,
        overlay_path=overlay,
        instances_sent=len(paths),
        study_uid=study_uid,
        series_uid=series_uid,
        seg_sop_instance_uid=check.sop_instance_uid,
        timings=timings,
        dice=dice,
        dciodvfy_errors=None if check.dciodvfy is None else len(check.dciodvfy.errors),
        dciodvfy_warnings=None if check.dciodvfy is None else len(check.dciodvfy.warnings),
        problems=list(check.problems),
    )
    write_text_atomic(workdir / "summary.json", json.dumps(report.to_json(), indent=2) + "\n")
    return report
