"""Run the installed TotalSegmentator package's own Python API on NIfTI files, in a process of its own.

``python -m tests.support.totalseg_reference jobs.json``: ``jobs.json`` holds ``{"jobs": [{"input":
..., "output": ..., "task": ..., "options": {...}}], "report": path}``. Each job calls
``totalsegmentator.python_api.totalsegmentator(input, None, task=..., device="cpu", **options)`` and
saves the returned label map to ``output``. The package reads its weights from ``$TOTALSEG_WEIGHTS_PATH``
and its config from ``$TOTALSEG_HOME_DIR`` (set by the caller). Every HTTP request the package tries is
refused and recorded in the report (``requests``), so a test can show that nothing phoned home.

A process of its own because the package patches nnU-Net's classes when imported and sets nnU-Net's
environment variables, which must not leak into the node's code under test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _guard_network(calls: list[str]) -> None:
    import requests

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(" ".join(str(a) for a in args[:2]))
        raise requests.ConnectionError("network disabled in tests")

    requests.get = refuse  # type: ignore[assignment]
    requests.post = refuse  # type: ignore[assignment]
    requests.Session.request = refuse  # type: ignore[assignment,method-assign]


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    calls: list[str] = []
    _guard_network(calls)
    import nibabel as nib
    from totalsegmentator.python_api import totalsegmentator

    for job in spec["jobs"]:
        image = totalsegmentator(
            Path(job["input"]),
            None,
            task=job["task"],
            device="cpu",
            quiet=True,
            nr_thr_saving=1,
            **job["options"],
        )
        nib.save(image, job["output"])
    Path(spec["report"]).write_text(json.dumps({"requests": calls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
