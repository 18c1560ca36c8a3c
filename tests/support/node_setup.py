"""Node configurations for end-to-end tests: a model spec (the committed demo model when present, else
a random-weights stand-in with the same id and labels), a rule, a destination; dcmtk storescu sending
with a record of which instances were acknowledged; a phantom CT series on disk."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread

from dicom_node.demo.bundled import demo_model_dir, demo_model_spec
from tests.support.tools import dcmtk, peer_env
from tests.support.written_files import files_in, read_complete

DEMO_SPEC = demo_model_spec()
DEMO_MODEL_DIR = demo_model_dir()
FAST_ARGS = {"use_folds": [0], "tta": False, "tile_step_size": 1.0}


def model_spec(root: Path) -> Path:
    """The spec serving model ``demo``: the repository's demo model if it is committed, else a
    random-weights model (plumbing: the node's behaviour does not depend on what it segments)."""
    if DEMO_SPEC.is_file() and (DEMO_MODEL_DIR / "fold_0").is_dir():
        return DEMO_SPEC
    from tests.support.random_model import write_random_spec

    return write_random_spec(root, {"demo": {"default_args": dict(FAST_ARGS)}})


def node_config(
    storage: Path,
    spec: Path,
    destination_port: int,
    *,
    quiet_seconds: float = 1.0,
    destination_ae: str = "STORESCP",
    rule: dict[str, Any] | None = None,
    sending: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A node config (as a mapping) listening on a free port (0) with one CT rule to ``pacs``."""
    the_rule: dict[str, Any] = {
        "name": "ct-demo",
        "match": {"modality": "CT", "series_description": "(?i).*phantom.*"},
        "models": ["demo"],
        "destinations": ["pacs"],
        "series_quiet_seconds": quiet_seconds,
    }
    the_rule.update(rule or {})
    return {
        "node": {
            "ae_title": "NNUNET",
            "host": "127.0.0.1",
            "port": 0,
            "storage_dir": str(storage),
            "min_free_disk_mb": 0,
        },
        "model_spec": str(spec),
        "destinations": {
            "pacs": {
                "ae_title": destination_ae,
                "host": "127.0.0.1",
                "port": destination_port,
                "timeout_seconds": 10,
            }
        },
        "rules": [the_rule],
        "inference": {"device": "cpu", **(inference or {})},
        "sending": {"backoff_initial_seconds": 0.5, "backoff_max_seconds": 2.0, **(sending or {})},
    }


def phantom_series(out_dir: Path, *, slices: int = 16, seed: int = 0, **kw: Any) -> list[Path]:
    """A small phantom CT series (``slices`` x 48 x 48) written to ``out_dir``."""
    from dicom_node.demo.phantom import make_phantom, write_ct_series

    phantom = make_phantom(shape=(slices, 48, 48), spacing=(6.0, 6.0, 8.0), seed=seed)
    return write_ct_series(phantom, out_dir, **kw)


@dataclass
class StoreRun:
    returncode: int
    acknowledged: list[Path]  # files answered with a success status
    output: str


_SENDING = re.compile(r"Sending file: (?P<path>.+)$")


def parse_acknowledged(output: str) -> list[Path]:
    """Files storescu (-v) saw acknowledged with success."""
    acked: list[Path] = []
    current: str | None = None
    for line in output.splitlines():
        m = _SENDING.search(line)
        if m:
            current = m["path"].strip()
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(Path(current))
            current = None
    return acked


def storescu_command(
    port: int, files: list[Path], *, called: str = "NNUNET", calling: str = "STORESCU"
) -> list[str]:
    return [
        dcmtk("storescu"),
        "-v",
        "-aec",
        called,
        "-aet",
        calling,
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]


def storescu(port: int, files: list[Path], *, called: str = "NNUNET", calling: str = "STORESCU") -> StoreRun:
    """Send ``files`` with dcmtk storescu (TCP_NODELAY=1) over one association."""
    proc = subprocess.run(
        storescu_command(port, files, called=called, calling=calling),
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    return StoreRun(proc.returncode, parse_acknowledged(output), output)


def received_segs(folder: Path) -> dict[str, list[Path]]:
    """SEG files in a storescp output folder, by SOP Instance UID; a file storescp is still writing
    is left out until it reads completely (wait for a SEG by polling this)."""
    out: dict[str, list[Path]] = {}
    for path in files_in(folder):
        ds = read_complete(path)
        if ds is not None and str(ds.get("Modality", "")) == "SEG":
            out.setdefault(str(ds.SOPInstanceUID), []).append(path)
    return out


def referenced_instances(seg_path: Path) -> set[str]:
    """SOP Instance UIDs a SEG references (ReferencedSeriesSequence)."""
    ds = dcmread(seg_path, stop_before_pixels=True)
    refs: set[str] = set()
    for series in ds.get("ReferencedSeriesSequence", []):
        for inst in series.get("ReferencedInstanceSequence", []):
            refs.add(str(inst.ReferencedSOPInstanceUID))
    return refs


def referenced_series(seg_path: Path) -> set[str]:
    ds = dcmread(seg_path, stop_before_pixels=True)
    return {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])}
