"""Post-processing on small synthetic arrays with exact expected outputs."""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import PredictionError
from inference.postprocess import (
    PostprocessOptions,
    candidates,
    intersect_components,
    keep_labels,
    postprocess,
    relabel,
    threshold_labels,
)


def cube(shape: tuple[int, int, int], corner: tuple[int, int, int], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    z, y, x = corner
    mask[z : z + size, y : y + size, x : x + size] = True
    return mask


SHAPE = (10, 12, 12)


def test_components_are_26_connected_and_small_ones_dropped() -> None:
    probability = np.zeros(SHAPE, dtype=np.float32)
    a = cube(SHAPE, (0, 0, 0), 2)  # 8 voxels ...
    b = cube(SHAPE, (2, 2, 2), 2)  # ... touching a only at a corner: one 16-voxel component
    small = cube(SHAPE, (6, 8, 8), 2)  # 8 voxels alone: dropped (<= 10)
    probability[a | b] = 0.8
    probability[small] = 0.9
    kept = candidates(probability, 0.5)
    np.testing.assert_array_equal(kept, a | b)


def test_exactly_ten_voxels_is_dropped_eleven_kept() -> None:
    probability = np.zeros(SHAPE, dtype=np.float32)
    probability[0, 0, :10] = 0.9
    probability[5, 5, :11] = 0.9
    kept = candidates(probability, 0.5)
    assert kept.sum() == 11 and kept[5, 5, :11].all()


def test_values_below_threshold_split_components() -> None:
    probability = np.zeros(SHAPE, dtype=np.float32)
    probability[2:5, 2:5, 0:9] = 0.7
    probability[2:5, 2:5, 4] = 0.3  # a wall below the threshold: two 3x3x4 blobs of 36 voxels
    kept = candidates(probability, 0.5)
    assert kept.sum() == 72 and not kept[:, :, 4].any()
    assert candidates(probability, 0.2).sum() == 81


def test_min_confidence_drops_components_without_a_confident_voxel() -> None:
    probability = np.zeros(SHAPE, dtype=np.float32)
    weak = cube(SHAPE, (0, 0, 0), 3)
    strong = cube(SHAPE, (5, 6, 6), 3)
    probability[weak] = 0.6
    probability[strong] = 0.6
    probability[6, 7, 7] = 0.95
    np.testing.assert_array_equal(candidates(probability, 0.5, min_confidence=0.9), strong)
    np.testing.assert_array_equal(candidates(probability, 0.5), weak | strong)  # default: the threshold


def test_intersection_filter_uses_overlap_over_component_size() -> None:
    probability = np.zeros(SHAPE, dtype=np.float32)
    left = cube(SHAPE, (0, 0, 0), 3)  # 27 voxels
    right = cube(SHAPE, (5, 6, 6), 3)
    probability[left | right] = 0.9
    reference = np.zeros(SHAPE, dtype=bool)
    reference[0, 0, 0:3] = True  # 3/27 = 0.111 of left
    reference[5, 6, 6 : 5 + 2] = True  # 1/27 = 0.037 of right
    np.testing.assert_array_equal(candidates(probability, 0.5, intersect_with=reference), left)
    assert not candidates(probability, 0.5, intersect_with=reference, min_intersection=0.2).any()


def test_threshold_labels_per_channel_and_most_probable_wins() -> None:
    probs = np.zeros((3, *SHAPE), dtype=np.float32)
    one = cube(SHAPE, (0, 0, 0), 3)
    two = cube(SHAPE, (1, 1, 1), 3)  # overlaps one
    probs[1][one] = 0.6
    probs[2][two] = 0.8
    probs[0] = 1 - probs[1:].max(axis=0)
    labels = threshold_labels(probs, PostprocessOptions(proba_threshold=0.5))
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[one] = 1
    expected[two] = 2
    np.testing.assert_array_equal(labels, expected)
    only_one = threshold_labels(probs, PostprocessOptions(proba_threshold=0.5, class_idx=(1,)))
    np.testing.assert_array_equal(only_one, one.astype(np.uint8))
    with pytest.raises(PredictionError, match="class_idx 3 is not a probability channel"):
        threshold_labels(probs, PostprocessOptions(proba_threshold=0.5, class_idx=(3,)))


def test_channel_labels_map_channels_to_values() -> None:
    probs = np.zeros((2, *SHAPE), dtype=np.float32)
    blob = cube(SHAPE, (2, 2, 2), 3)
    probs[1][blob] = 0.9
    labels = threshold_labels(probs, PostprocessOptions(proba_threshold=0.5), channel_labels={1: 300})
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 300}


def test_postprocess_without_threshold_is_argmax_restricted_to_class_idx() -> None:
    labels = np.array([[[0, 1, 2, 3]]], dtype=np.uint8)
    np.testing.assert_array_equal(postprocess(labels, None, PostprocessOptions()), labels)
    np.testing.assert_array_equal(
        postprocess(labels, None, PostprocessOptions(class_idx=(1, 3))), np.array([[[0, 1, 0, 3]]])
    )
    with pytest.raises(PredictionError, match="no probabilities"):
        postprocess(labels, None, PostprocessOptions(proba_threshold=0.5))


def test_relabel_is_a_lookup_table() -> None:
    labels = np.array([0, 1, 2, 3, 2, 1], dtype=np.uint8)
    np.testing.assert_array_equal(relabel(labels, {1: 5, 3: 0}), [0, 5, 2, 0, 2, 5])
    np.testing.assert_array_equal(relabel(labels, {2: 7}, others=0), [0, 0, 7, 0, 7, 0])
    assert relabel(labels, {1: 1000}).dtype == np.uint16
    np.testing.assert_array_equal(keep_labels(labels, [2]), [0, 0, 2, 0, 2, 0])
    with pytest.raises(PredictionError, match="unsigned"):
        relabel(labels.astype(np.float32), {1: 2})


def test_intersect_components_keeps_overlapping_components_with_their_labels() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    first = cube(SHAPE, (0, 0, 0), 2)
    second = cube(SHAPE, (6, 6, 6), 2)
    labels[first] = 2
    labels[second] = 3
    reference = cube(SHAPE, (0, 0, 0), 1)  # 1/8 of first, nothing of second
    expected = np.where(first, 2, 0).astype(np.uint8)
    np.testing.assert_array_equal(intersect_components(labels, reference, 0.1), expected)
    assert not intersect_components(labels, reference, 0.2).any()
    empty = np.zeros(SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(intersect_components(empty, reference), empty)


def test_half_precision_probabilities_work_the_same() -> None:
    probs = np.zeros((2, *SHAPE), dtype=np.float32)
    probs[1][cube(SHAPE, (2, 2, 2), 3)] = 0.8
    probs[0] = 1 - probs[1]
    options = PostprocessOptions(proba_threshold=0.5, min_confidence=0.75)
    np.testing.assert_array_equal(
        threshold_labels(probs.astype(np.float16), options), threshold_labels(probs, options)
    )
