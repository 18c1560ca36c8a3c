"""``min_mem`` admission with cached predictors on a (simulated) GPU: what a cached model holds counts
towards its own ``min_mem``, and idle predictors of other models are dropped to make room before a
job is refused. Made-up memory figures; stand-in predictors (no GPU, no nnU-Net here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.device import MIB, DeviceGate
from inference.errors import InsufficientGpuMemoryError
from inference.predictors import Prediction, PredictorCache, PredictorKey
from tests.support.fake_model import make_model_folder

TOTAL_MIB = 8000
WEIGHTS_MIB = 3000


class StandIn:
    """What the cache needs of a warm predictor: its key, the bytes it holds, predict()."""

    def __init__(self, key: PredictorKey) -> None:
        self.key = key
        self.device_bytes = WEIGHTS_MIB * MIB

    def predict(self, images: Sequence[np.ndarray], spacing_xyz: Sequence[float], **_: Any) -> Prediction:
        return Prediction(labels=np.zeros(np.shape(images[0]), dtype=np.uint8))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PredictorCache:
    device = torch.device("cuda", 0)

    def mem_info(_device: torch.device) -> tuple[int, int]:
        held = sum(e.device_bytes for e in cache._entries.values())  # what the cached models hold
        return TOTAL_MIB * MIB - held - 1000 * MIB, TOTAL_MIB * MIB  # and 1000 MiB used by others

    cache = PredictorCache(4, device, gate=DeviceGate(device, mem_info=mem_info))
    monkeypatch.setattr(cache, "_load", StandIn)
    for name in ("a", "b"):
        make_model_folder(tmp_path / name, size=100)
    return cache


def run(cache: PredictorCache, folder: Path, min_mem: float) -> None:
    cache.predict(folder, [np.zeros((2, 2, 2), np.float32)], (1.0, 1.0, 1.0), folds=(0,), min_mem_mib=min_mem)


def test_a_cached_model_is_admitted_with_its_own_weights_counted(
    cache: PredictorCache, tmp_path: Path
) -> None:
    # 8000 total - 1000 others - 3000 its weights = 4000 free; min_mem 6500 <= 4000 + 3000 held
    run(cache, tmp_path / "a", 6500)
    run(cache, tmp_path / "a", 6500)  # a second job with the model warm: still admitted
    assert cache.loads == 1


def test_idle_predictors_of_other_models_are_dropped_to_make_room(
    cache: PredictorCache, tmp_path: Path
) -> None:
    run(cache, tmp_path / "a", 100)
    # b loaded next to a: 8000 - 1000 - 3000 - 3000 = 1000 free + 3000 held < 6500 -> drop a -> 4000 + 3000
    run(cache, tmp_path / "b", 6500)
    assert [Path(k.model_dir).name for k in cache.cached_keys()] == ["b"]


def test_a_job_that_cannot_fit_is_refused_with_the_figures(cache: PredictorCache, tmp_path: Path) -> None:
    with pytest.raises(
        InsufficientGpuMemoryError, match=r"needs 7500 MiB .* only 4000 MiB are free plus 3000"
    ):
        run(cache, tmp_path / "a", 7500)
