"""``dicom-node predict``: segment one DICOM series from folders, without the network part.

Each ``--input DIR`` must hold exactly one series (several = the model's extra input channels, in
order). The SEG (and NIfTI copies with ``--nifti``) go to ``--output``; the paths written are
printed on stdout, one per line. Any failure exits 1 with one ``error: <reason>`` line on stderr
(the traceback only with ``--log-level DEBUG``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicom_node.demo.bundled import demo_model_spec
from inference.errors import InferenceError
from inference.series import group_series_files

logger = logging.getLogger(__name__)

SPEC_NAME = "model-serve-spec.yaml"
SPEC_ENV = "MODEL_SERVE_SPEC"


def default_spec(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``$MODEL_SERVE_SPEC`` when set, else ``./model-serve-spec.yaml`` when present, else the one
    shipped in the package (the demo model)."""
    from_env = (os.environ if environ is None else environ).get(SPEC_ENV)
    if from_env:
        return Path(from_env).expanduser().resolve()
    local = (cwd or Path.cwd()) / SPEC_NAME
    return local if local.is_file() else demo_model_spec()


def _folds(values: list[str]) -> list[int] | str:
    if values == ["all"]:
        return "all"
    try:
        folds = [int(v) for v in values]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--folds takes fold numbers or 'all', got {' '.join(values)}"
        ) from None
    return folds


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment a DICOM series from a folder and write a DICOM SEG",
        description="Run a model (or a cascade: --model several times) on the series in --input and "
        "write the DICOM SEG into --output. Options left out come from the model's default_args.",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="ID_OR_ALIAS",
        help="model id or alias (repeat for a cascade)",
    )
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder holding one DICOM series (repeat for extra input channels)",
    )
    parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the results")
    parser.add_argument(
        "--spec",
        type=Path,
        default=None,
        help=f"model spec (default: ${SPEC_ENV}, else ./{SPEC_NAME}, else the bundled one)",
    )
    parser.add_argument("--folds", nargs="+", default=None, metavar="F", help="fold numbers, or 'all'")
    parser.add_argument("--checkpoint", default=None, metavar="NAME", help="e.g. checkpoint_best.pth")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation (mirroring)",
    )
    parser.add_argument(
        "--tile-step-size", type=float, default=None, metavar="F", help="sliding window step (0, 1]"
    )
    parser.add_argument("--nifti", action="store_true", help="also write the label map as NIfTI")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--empty-result",
        choices=["empty_seg", "skip"],
        default="empty_seg",
        help="when nothing is found: write an empty SEG (default) or nothing",
    )
    parser.set_defaults(func=run_predict)


def _request_args(ns: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if ns.folds is not None:
        args["use_folds"] = _folds(ns.folds)
    if ns.checkpoint is not None:
        args["checkpoint_name"] = ns.checkpoint
    if ns.tta is not None:
        args["tta"] = ns.tta
    if ns.tile_step_size is not None:
        args["tile_step_size"] = ns.tile_step_size
    return args


def _series_files(folder: Path) -> list[Path]:
    """The files of the one series in ``folder``; InferenceError when there are none or several."""
    if not folder.is_dir():
        raise InferenceError(f"input {folder} is not a folder")
    groups = group_series_files(folder)
    if not groups:
        raise InferenceError(f"input {folder} holds no DICOM series")
    if len(groups) > 1:
        listed = "; ".join(g.describe() for g in groups.values())
        raise InferenceError(f"input {folder} holds {len(groups)} series, give one per --input: {listed}")
    return list(next(iter(groups.values())).paths)


def predict(ns: argparse.Namespace) -> list[Path]:
    """Run the request described by the parsed arguments; the paths written."""
    from inference.api import InferenceRequest
    from inference.executor import InProcessExecutor

    spec = ns.spec or default_spec()
    if not spec.is_file():
        raise InferenceError(f"model spec {spec} not found (give --spec)")
    inputs = [_series_files(folder) for folder in ns.input]
    executor = InProcessExecutor(spec, device=ns.device, max_models=max(2, len(ns.model)))
    request = InferenceRequest(
        inputs=inputs,
        models=ns.model,
        args=_request_args(ns),
        output_dir=ns.output,
        empty_result=ns.empty_result,
        nifti=ns.nifti,
    )
    result = executor.run(request)
    for warning in result.warnings:
        logger.warning("%s", warning)
    if result.empty:
        logger.info("the model found nothing in the series")
    return [out.path for out in result.outputs]


def run_predict(ns: argparse.Namespace) -> int:
    try:
        written = predict(ns)
    except (InferenceError, argparse.ArgumentTypeError, OSError) as exc:
        logger.debug("predict failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for users; the traceback with --log-level DEBUG
        logger.debug("predict failed", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not written:
        print("no output written (nothing found and --empty-result skip)")
    for path in written:
        print(path)
    return 0
