"""Warm predictor cache and device admission: real nnU-Net predictors (random weights) on the CPU;
only GPU memory figures are stand-ins, because no GPU runs here."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.device import DeviceGate, select_device
from inference.errors import InsufficientGpuMemoryError, PredictionError, SpecError
from inference.predictors import PredictorCache, normalise_folds, resolve_folds
from tests.support.random_model import make_random_model

SPACING_XYZ = (6.0, 6.0, 8.0)  # the random models' own spacing, so no resampling happens


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "a": make_random_model(root / "a", folds=(0, 1), checkpoints=("checkpoint_final.pth",), seed=1),
        "b": make_random_model(root / "b", seed=2),
        "c": make_random_model(root / "c", seed=3),
        "two": make_random_model(root / "two", channels=("T2", "ADC"), seed=4),
        "best": make_random_model(
            root / "best", folds=(0, "all"), checkpoints=("checkpoint_best.pth",), seed=5
        ),
    }


@pytest.fixture()
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    volume = rng.normal(0.0, 200.0, (16, 32, 32)).astype(np.float32)
    volume[4:12, 8:24, 8:24] += 400.0
    return volume


@pytest.fixture()
def cache() -> PredictorCache:
    return PredictorCache(max_entries=2, device="cpu")


def count_forward_passes(cache: PredictorCache, model_dir: Path) -> list[int]:
    """Count the network's forward passes (the hook survives weight reloads between folds)."""
    calls = [0]
    network = cache.get(model_dir, (0,)).predictor.network

    def hook(*_: object) -> None:
        calls[0] += 1

    network.register_forward_hook(hook)
    return calls


def test_second_call_reuses_the_warm_predictor(
    cache: PredictorCache, models: dict[str, Path], image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    inits: list[str] = []
    original = nnUNetPredictor.initialize_from_trained_model_folder

    def counting(self: nnUNetPredictor, folder: str, *args: object, **kwargs: object) -> None:
        inits.append(folder)
        original(self, folder, *args, **kwargs)

    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", counting)
    first = cache.predict(models["b"], [image], SPACING_XYZ, folds=(0,), tile_step_size=1.0)
    second = cache.predict(models["b"], [image], SPACING_XYZ, folds=[0], tile_step_size=1.0)
    assert inits == [str(models["b"].resolve())]
    assert cache.loads == 1
    assert first.labels.dtype == np.uint8 and first.labels.shape == image.shape
    np.testing.assert_array_equal(first.labels, second.labels)
    assert len(np.unique(first.labels)) > 1  # the stand-in model is not trivially constant


def test_lru_evicts_the_least_recently_used(cache: PredictorCache, models: dict[str, Path]) -> None:
    a = cache.get(models["a"], (0,))
    cache.get(models["b"], (0,))
    assert cache.get(models["a"], (0,)) is a  # touch a: b is now the oldest
    cache.get(models["c"], (0,))
    assert [Path(k.model_dir).name for k in cache.cached_keys()] == ["a", "c"]
    assert cache.loads == 3
    cache.get(models["b"], (0,))
    assert cache.loads == 4
    assert [Path(k.model_dir).name for k in cache.cached_keys()] == ["c", "b"]


def test_concurrent_first_use_loads_once(cache: PredictorCache, models: dict[str, Path]) -> None:
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(models["c"], (0,)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 4 and all(g is got[0] for g in got)
    assert cache.loads == 1


def test_folds_select_weights_and_are_separate_entries(
    cache: PredictorCache, models: dict[str, Path], image: np.ndarray
) -> None:
    one = cache.predict(models["a"], [image], SPACING_XYZ, folds=0, tile_step_size=1.0, probabilities=True)
    both = cache.predict(
        models["a"], [image], SPACING_XYZ, folds=[0, 1], tile_step_size=1.0, probabilities=True
    )
    assert cache.loads == 2
    assert len(cache.get(models["a"], (0, 1)).predictor.list_of_parameters) == 2
    assert one.probabilities is not None and both.probabilities is not None
    assert not np.allclose(one.probabilities, both.probabilities)
    # folds=None means every trained fold: the same predictor as (0, 1)
    auto = cache.get(models["a"], None)
    assert auto.key.folds == (0, 1) and cache.loads == 2


def test_checkpoint_selection_and_missing_checkpoint(cache: PredictorCache, models: dict[str, Path]) -> None:
    warm = cache.get(models["best"], [0], "checkpoint_best.pth")
    assert warm.key.checkpoint == "checkpoint_best.pth"
    with pytest.raises(SpecError, match=r"fold 0 has no checkpoint_final\.pth"):
        cache.get(models["best"], [0], "checkpoint_final.pth")
    with pytest.raises(SpecError, match=r"fold 3 has no checkpoint_final\.pth"):
        cache.get(models["a"], [3])
    with pytest.raises(SpecError, match="invalid checkpoint name"):
        cache.get(models["a"], [0], "../fold_0/checkpoint_final.pth")
    assert cache.loads == 1


def test_unreadable_checkpoint_is_a_spec_error(cache: PredictorCache, tmp_path: Path) -> None:
    broken = make_random_model(tmp_path / "broken")
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a torch checkpoint")
    with pytest.raises(SpecError, match=r"cannot load model .*broken \(folds \[0\], checkpoint_final\.pth\)"):
        cache.get(broken, [0])
    assert cache.loads == 0 and len(cache) == 0


def test_all_means_every_fold_else_fold_all(models: dict[str, Path], tmp_path: Path) -> None:
    assert resolve_folds(models["best"], "all", "checkpoint_best.pth") == (0,)
    assert resolve_folds(models["a"], "all", "checkpoint_final.pth") == (0, 1)
    only_all = make_random_model(tmp_path / "only_all", folds=("all",))
    assert resolve_folds(only_all, "all", "checkpoint_final.pth") == ("all",)
    assert resolve_folds(only_all, ["all"], "checkpoint_final.pth") == ("all",)
    with pytest.raises(SpecError, match="has no fold_N"):
        resolve_folds(only_all, None, "checkpoint_final.pth")
    assert normalise_folds(["1", 0, 1]) == (1, 0)
    with pytest.raises(SpecError, match="invalid fold"):
        normalise_folds(["first"])


def test_tta_flag_reaches_the_predictor(
    cache: PredictorCache, models: dict[str, Path], image: np.ndarray
) -> None:
    calls = count_forward_passes(cache, models["b"])
    plain = cache.predict(models["b"], [image], SPACING_XYZ, folds=0, tta=False, tile_step_size=1.0)
    assert calls[0] == 1  # one tile, no mirroring
    mirrored = cache.predict(models["b"], [image], SPACING_XYZ, folds=0, tta=True, tile_step_size=1.0)
    assert calls[0] == 1 + 8  # one tile, identity + 7 mirror combinations of 3 axes
    assert plain.labels.shape == mirrored.labels.shape
    cache.predict(models["b"], [image], SPACING_XYZ, folds=0, tta=False, tile_step_size=1.0)
    assert calls[0] == 1 + 8 + 1  # switched back without reloading
    assert cache.loads == 1


def test_tile_step_size_reaches_the_predictor(cache: PredictorCache, models: dict[str, Path]) -> None:
    big = np.random.default_rng(1).normal(0.0, 200.0, (28, 56, 56)).astype(np.float32)
    calls = count_forward_passes(cache, models["b"])
    cache.predict(models["b"], [big], SPACING_XYZ, folds=0, tile_step_size=1.0)
    coarse = calls[0]
    cache.predict(models["b"], [big], SPACING_XYZ, folds=0, tile_step_size=0.5)
    fine = calls[0] - coarse
    # patch (16, 32, 32) over (28, 56, 56): 2 steps per axis at step 1.0, 3 at step 0.5
    assert (coarse, fine) == (8, 27)


def test_probabilities_dtype_and_argmax(
    cache: PredictorCache, models: dict[str, Path], image: np.ndarray
) -> None:
    p32 = cache.predict(models["b"], [image], SPACING_XYZ, folds=0, tile_step_size=1.0, probabilities=True)
    p16 = cache.predict(
        models["b"],
        [image],
        SPACING_XYZ,
        folds=0,
        tile_step_size=1.0,
        probabilities=True,
        probabilities_dtype="float16",
    )
    assert p32.probabilities is not None and p16.probabilities is not None
    assert p32.probabilities.dtype == np.float32 and p16.probabilities.dtype == np.float16
    assert p32.probabilities.shape == (4, *image.shape)
    np.testing.assert_allclose(p32.probabilities.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(p32.probabilities, axis=0), p32.labels)
    with pytest.raises(PredictionError, match="float32 or float16"):
        cache.predict(
            models["b"], [image], SPACING_XYZ, folds=0, probabilities=True, probabilities_dtype="int8"
        )


def test_channels_checked_against_dataset_json(
    cache: PredictorCache, models: dict[str, Path], image: np.ndarray
) -> None:
    with pytest.raises(PredictionError, match=r"expects 2 input channel\(s\) \['T2', 'ADC'\], got 1"):
        cache.predict(models["two"], [image], SPACING_XYZ, folds=0)
    with pytest.raises(PredictionError, match="one shape"):
        cache.predict(models["two"], [image, image[:-1]], SPACING_XYZ, folds=0)
    result = cache.predict(models["two"], [image, image * 0.5], SPACING_XYZ, folds=0, tile_step_size=1.0)
    assert result.labels.shape == image.shape


def test_non_native_spacing_is_resampled_back(cache: PredictorCache, models: dict[str, Path]) -> None:
    volume = np.random.default_rng(2).normal(0.0, 200.0, (10, 20, 24)).astype(np.float32)
    result = cache.predict(models["b"], [volume], (3.0, 4.0, 10.0), folds=0, tile_step_size=1.0)
    assert result.labels.shape == volume.shape


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto", cuda_count=lambda: 1) == torch.device("cuda", 0)
    assert select_device("cuda:1", cuda_count=lambda: 2) == torch.device("cuda", 1)
    with pytest.raises(PredictionError, match="CUDA is not available"):
        select_device("cuda", cuda_count=lambda: 0)
    with pytest.raises(PredictionError, match="only 2 CUDA device"):
        select_device("cuda:2", cuda_count=lambda: 2)
    with pytest.raises(PredictionError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_auto_without_cuda_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.device"):
        assert select_device("auto", cuda_count=lambda: 0) == torch.device("cpu")
    assert "no CUDA device" in caplog.text


def test_gpu_admission_uses_free_memory() -> None:
    free_mib = [3000]
    gate = DeviceGate(torch.device("cuda", 0), mem_info=lambda _d: (free_mib[0] * 2**20, 80_000 * 2**20))
    gate.admit(2000, what="model demo")
    with pytest.raises(InsufficientGpuMemoryError, match=r"model demo needs 4000 MiB .* only 3000 MiB"):
        gate.admit(4000, what="model demo")
    free_mib[0] = 5000
    gate.admit(4000)
    cpu = DeviceGate(torch.device("cpu"), mem_info=lambda _d: pytest.fail("CPU has no memory check"))
    cpu.admit(10**9)


def test_refused_job_releases_its_slot() -> None:
    gate = DeviceGate(torch.device("cuda", 0), mem_info=lambda _d: (0, 1))
    with pytest.raises(InsufficientGpuMemoryError), gate.job(100):
        pytest.fail("admitted without memory")
    gate._mem_info = lambda _d: (10**12, 10**12)  # memory freed: the slot must be free again
    with gate.job(100):
        pass


@pytest.mark.parametrize(("max_jobs", "overlap"), [(1, False), (2, True)])
def test_gate_limits_jobs_per_device(max_jobs: int, overlap: bool) -> None:
    """Two jobs meet inside the gate only when it has two slots (a barrier inside proves it)."""
    gate = DeviceGate(torch.device("cpu"), max_jobs=max_jobs)
    barrier = threading.Barrier(2)
    met: list[bool] = []

    def job() -> None:
        with gate.job():
            try:
                barrier.wait(timeout=1.0)
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert met and all(m is overlap for m in met)
