"""Warm nnU-Net predictors: one ``nnUNetPredictor`` per (model folder, folds, checkpoint, device),
initialised once from the trained model folder and kept in a bounded LRU (no time-to-live), so a
model is read from disk only the first time it is used or after it was evicted.

Prediction runs in this process with ``predict_single_npy_array``: no preprocessing workers, no
export pool, no multiprocessing. The per-call options that nnU-Net keeps as plain attributes of
the predictor (``tile_step_size``, ``use_mirroring``) are set on the warm instance for each call;
that is safe because every call holds the predictor's own lock and a slot of the device's
:class:`~inference.device.DeviceGate` (one job per device by default).

Outputs: the label map as nnU-Net makes it (``uint8``, or ``uint16`` beyond 254 foreground labels)
and, when asked, the per-class probabilities ``(classes, z, y, x)`` as ``float32`` (default) or
``float16`` (half the memory; enough precision for thresholds and display).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.device import MIB, DeviceGate, select_device
from inference.errors import InsufficientGpuMemoryError, PredictionError, SpecError
from inference.stdout_capture import captured

logger = logging.getLogger(__name__)

Fold = int | str
Folds = tuple[Fold, ...]

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]+\.pth")
PROBABILITY_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def normalise_folds(folds: Fold | Sequence[Fold] | None) -> Folds | None:
    """``None`` (every trained ``fold_N``), one fold, or several, as a tuple of ints and/or
    ``"all"`` (see :func:`resolve_folds`)."""
    if folds is None:
        return None
    items: Sequence[Fold] = [folds] if isinstance(folds, int | str) else folds
    result: list[Fold] = []
    for item in items:
        if isinstance(item, bool):
            raise SpecError(f"invalid fold {item!r}: use fold numbers or 'all'")
        if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
            value: Fold = int(item)
        elif isinstance(item, str) and item.strip().lower() == "all":
            value = "all"
        else:
            raise SpecError(f"invalid fold {item!r}: use fold numbers or 'all'")
        if value not in result:
            result.append(value)
    if not result:
        raise SpecError("no folds given: use fold numbers, 'all', or leave unset to use every trained fold")
    return tuple(result)


def resolve_folds(model_dir: Path, folds: Fold | Sequence[Fold] | None, checkpoint: str) -> Folds:
    """Concrete folds for ``model_dir``: the requested ones, each checked to have ``checkpoint``,
    or every ``fold_N`` folder holding it when ``folds`` is None.

    ``"all"`` alone means every trained ``fold_N`` (the ensemble) or, when there is none,
    nnU-Net's ``fold_all`` (a model trained on every case), as :mod:`inference.spec` reads it."""
    if not _CHECKPOINT_NAME.fullmatch(checkpoint):
        raise SpecError(f"invalid checkpoint name {checkpoint!r} (expected e.g. checkpoint_final.pth)")
    wanted = normalise_folds(folds)
    if wanted is None or wanted == ("all",):
        found: list[int] = []
        for child in model_dir.glob("fold_*"):
            suffix = child.name[len("fold_") :]
            if suffix.isdigit() and (child / checkpoint).is_file():
                found.append(int(suffix))
        if found:
            return tuple(sorted(found))
        if wanted == ("all",) and (model_dir / "fold_all" / checkpoint).is_file():
            return ("all",)
        raise SpecError(f"model folder {model_dir} has no fold_N/{checkpoint}")
    for fold in wanted:
        path = model_dir / f"fold_{fold}" / checkpoint
        if not path.is_file():
            raise SpecError(f"model folder {model_dir}: fold {fold} has no {checkpoint} (missing {path})")
    return wanted


@dataclass(frozen=True)
class PredictorKey:
    """What makes two predictors different. ``model_dir`` is resolved; ``folds`` concrete."""

    model_dir: str
    folds: Folds
    checkpoint: str
    device: str


@dataclass(frozen=True)
class Prediction:
    """``labels``: (z, y, x) uint8/uint16; ``probabilities``: (classes, z, y, x) or None."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


class WarmPredictor:
    """An initialised ``nnUNetPredictor`` and what we know about its model."""

    def __init__(self, key: PredictorKey, predictor: Any) -> None:
        self.key = key
        self.predictor = predictor
        self.lock = threading.Lock()
        dataset = predictor.dataset_json
        names = dataset.get("channel_names", dataset.get("modality", {}))
        self.channel_names: tuple[str, ...] = tuple(str(names[k]) for k in sorted(names, key=int))
        label_manager = predictor.label_manager
        self.has_regions: bool = bool(label_manager.has_regions)
        self.num_outputs: int = int(label_manager.num_segmentation_heads)
        self.mirror_axes: tuple[int, ...] | None = (
            None if predictor.allowed_mirroring_axes is None else tuple(predictor.allowed_mirroring_axes)
        )
        #: bytes of the network's weights on the device (0 on the CPU): memory min_mem already covers
        self.device_bytes: int = _device_bytes(predictor) if key.device.startswith("cuda") else 0

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def predict(
        self,
        images: Sequence[np.ndarray],
        spacing_xyz: Sequence[float],
        *,
        tta: bool,
        tile_step_size: float,
        probabilities: bool = False,
        probabilities_dtype: Any = np.float32,
    ) -> Prediction:
        """Segment one case: ``images`` are the input channels in dataset.json order, each
        (z, y, x) on the same grid; ``spacing_xyz`` their (x, y, z) spacing in mm.

        Callers hold a device slot (:meth:`PredictorCache.predict` does)."""
        model = self.key.model_dir
        if len(images) != self.num_channels:
            raise PredictionError(
                f"model {model} expects {self.num_channels} input channel(s) {list(self.channel_names)}, "
                f"got {len(images)}"
            )
        shapes = {tuple(np.shape(image)) for image in images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise PredictionError(
                f"model {model}: input channels must be 3D arrays of one shape, got {shapes}"
            )
        if not 0.0 < tile_step_size <= 1.0:
            raise PredictionError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
        dtype = np.dtype(probabilities_dtype)
        if probabilities and dtype not in PROBABILITY_DTYPES:
            raise PredictionError(f"probabilities dtype must be float32 or float16, got {dtype}")
        stacked = np.stack([np.asarray(image, dtype=np.float32) for image in images])
        properties = {"spacing": [float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])]}
        with self.lock:
            self.predictor.tile_step_size = float(tile_step_size)
            self.predictor.use_mirroring = bool(tta)
            if tta and self.mirror_axes is None:
                logger.info("model %s allows no mirroring: TTA has no effect", model)
            try:
                with captured(f"nnU-Net {Path(model).name}"):
                    result = self.predictor.predict_single_npy_array(
                        stacked, properties, None, None, probabilities
                    )
            except torch.cuda.OutOfMemoryError as exc:
                raise InsufficientGpuMemoryError(
                    f"model {model} ran out of GPU memory on {self.key.device} for input {stacked.shape}"
                ) from exc
            except Exception as exc:
                raise PredictionError(f"nnU-Net prediction with model {model} failed: {exc}") from exc
        if probabilities:
            labels, probs = result
            return Prediction(
                labels=np.asarray(labels), probabilities=np.asarray(probs).astype(dtype, copy=False)
            )
        return Prediction(labels=np.asarray(result))


def _device_bytes(predictor: Any) -> int:
    network = getattr(predictor, "network", None)
    if network is None:
        return 0
    tensors = [*network.parameters(), *network.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


class PredictorCache:
    """Bounded LRU of warm predictors on one device. Thread-safe.

    ``max_entries``: how many (model, folds, checkpoint) combinations stay loaded; the least
    recently used is dropped when another is loaded. torch's CPU threads are a process-wide
    setting: the executor sets them when it is built (:func:`inference.device.set_torch_threads`).
    """

    def __init__(
        self,
        max_entries: int = 2,
        device: torch.device | str = "auto",
        *,
        gate: DeviceGate | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.device = device if isinstance(device, torch.device) else select_device(device)
        if gate is not None and gate.device != self.device:
            raise ValueError(f"gate is for {gate.device}, cache for {self.device}")
        self.gate = gate or DeviceGate(self.device)
        self._entries: OrderedDict[PredictorKey, WarmPredictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[PredictorKey, threading.Lock] = {}
        self._loads = 0

    @property
    def loads(self) -> int:
        """How many predictors were initialised from disk so far."""
        return self._loads

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def cached_keys(self) -> list[PredictorKey]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        self._release_memory()

    def key_for(
        self, model_dir: Path | str, folds: Fold | Sequence[Fold] | None, checkpoint: str = DEFAULT_CHECKPOINT
    ) -> PredictorKey:
        """Check the model folder, folds and checkpoint; the cache key for them."""
        folder = Path(model_dir).resolve()
        for required in ("plans.json", "dataset.json"):
            if not (folder / required).is_file():
                raise SpecError(f"model folder {folder} has no {required}")
        concrete = resolve_folds(folder, folds, checkpoint)
        return PredictorKey(str(folder), concrete, checkpoint, str(self.device))

    def get(
        self,
        model_dir: Path | str,
        folds: Fold | Sequence[Fold] | None = None,
        checkpoint: str = DEFAULT_CHECKPOINT,
    ) -> WarmPredictor:
        """The warm predictor for these settings, loading it (once, even when several threads
        ask at the same time) if it is not cached."""
        key = self.key_for(model_dir, folds, checkpoint)
        with self._lock:
            entry = self._hit(key)
            if entry is not None:
                return entry
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._hit(key)
                if entry is not None:
                    return entry
            entry = self._load(key)
            with self._lock:
                self._entries[key] = entry
                self._loads += 1
                self._loading.pop(key, None)
                evicted = []
                while len(self._entries) > self.max_entries:
                    old_key, _ = self._entries.popitem(last=False)
                    evicted.append(old_key)
            for old_key in evicted:
                logger.info(
                    "evicted predictor %s folds %s (%s)", old_key.model_dir, old_key.folds, old_key.checkpoint
                )
            if evicted:
                self._release_memory()
            return entry

    def predict(
        self,
        model_dir: Path | str,
        images: Sequence[np.ndarray],
        spacing_xyz: Sequence[float],
        *,
        folds: Fold | Sequence[Fold] | None = None,
        checkpoint: str = DEFAULT_CHECKPOINT,
        tta: bool = False,
        tile_step_size: float = 0.5,
        probabilities: bool = False,
        probabilities_dtype: Any = np.float32,
        min_mem_mib: float | None = None,
    ) -> Prediction:
        """Segment one case with a warm predictor, holding a device slot (and, on a GPU, only after
        ``min_mem_mib`` of free memory was seen)."""
        warm = self.get(model_dir, folds, checkpoint)
        started = time.perf_counter()
        with self.gate.job(
            min_mem_mib,
            what=f"model {warm.key.model_dir}",
            held_mib=warm.device_bytes / MIB,
            release=lambda: self.evict_others(warm.key),
        ):
            result = warm.predict(
                images,
                spacing_xyz,
                tta=tta,
                tile_step_size=tile_step_size,
                probabilities=probabilities,
                probabilities_dtype=probabilities_dtype,
            )
        logger.debug(
            "predicted %s with %s in %.2f s (tta=%s, step=%s)",
            np.shape(images[0]),
            Path(warm.key.model_dir).name,
            time.perf_counter() - started,
            tta,
            tile_step_size,
        )
        return result

    def evict_others(self, keep: PredictorKey) -> int:
        """Drop every cached predictor but ``keep`` (to make room on the device); how many."""
        with self._lock:
            dropped = [k for k in self._entries if k != keep]
            for key in dropped:
                del self._entries[key]
        if dropped:
            logger.info("evicted %d idle predictor(s) from %s to make room", len(dropped), self.device)
            self._release_memory()
        return len(dropped)

    def _hit(self, key: PredictorKey) -> WarmPredictor | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _load(self, key: PredictorKey) -> WarmPredictor:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        started = time.perf_counter()
        what = f"nnU-Net {Path(key.model_dir).name}"
        try:
            with captured(what):  # nnU-Net prints; see inference.stdout_capture
                predictor = nnUNetPredictor(
                    tile_step_size=0.5,
                    use_gaussian=True,
                    use_mirroring=False,
                    perform_everything_on_device=self.device.type == "cuda",
                    device=self.device,
                    verbose=False,
                    verbose_preprocessing=False,
                    allow_tqdm=False,
                )
                predictor.initialize_from_trained_model_folder(key.model_dir, key.folds, key.checkpoint)
        except Exception as exc:  # torch.load / pickle / plans errors: all mean "this folder is unusable"
            raise SpecError(
                f"cannot load model {key.model_dir} (folds {list(key.folds)}, {key.checkpoint}): {exc}"
            ) from exc
        previous_stage = predictor.configuration_manager.previous_stage_name
        if previous_stage is not None:
            raise SpecError(
                f"model {key.model_dir} is a stage of an nnU-Net cascade (it needs {previous_stage}); "
                "chain models with our cascade instead"
            )
        logger.info(
            "loaded model %s folds %s (%s) on %s in %.2f s",
            key.model_dir,
            list(key.folds),
            key.checkpoint,
            key.device,
            time.perf_counter() - started,
        )
        return WarmPredictor(key, predictor)

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
