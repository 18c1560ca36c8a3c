"""Derived segment colours: a pure function of the normalised name (the label value only when there is
no name), distinct for distinct names; CIELab conversion agrees with the standard sRGB (D65) values."""

from __future__ import annotations

import pytest

from inference.colors import derived_rgb, to_cielab

ORGANS = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "esophagus", "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder",
    "prostate", "sacrum", "vertebrae_L5", "heart", "aorta", "inferior_vena_cava", "portal_vein",
    "brain", "spinal_cord", "femur_left", "hip_right", "gluteus_maximus_left",
]  # fmt: skip


def test_same_name_same_colour_whatever_the_spelling_or_label_value() -> None:
    assert derived_rgb("Left Kidney", 1) == derived_rgb("left_kidney", 9) == derived_rgb("LeftKidney", 3)
    assert derived_rgb("left-kidney", 2) == derived_rgb("Left Kidney", 1)
    assert derived_rgb("L5 vertebra", 1) == derived_rgb("l5_vertebra", 2)
    assert derived_rgb("Left Kidney", 1) != derived_rgb("Right Kidney", 1)


def test_unnamed_segment_takes_its_colour_from_the_label_value() -> None:
    assert derived_rgb("", 5) == derived_rgb("Label 5", 1)
    assert derived_rgb("", 5) != derived_rgb("", 6)


def test_names_rarely_share_a_colour() -> None:
    colours = {derived_rgb(name, i) for i, name in enumerate(ORGANS, start=1)}
    assert len(colours) >= len(ORGANS) - 1


@pytest.mark.parametrize(
    ("rgb", "lab"),
    [
        ((0, 0, 0), (0.0, 0.0, 0.0)),
        ((255, 255, 255), (100.0, 0.0, 0.0)),
        ((255, 0, 0), (53.24, 80.09, 67.20)),
        ((0, 0, 255), (32.30, 79.19, -107.86)),
    ],
)
def test_cielab_matches_reference_values(rgb: tuple[int, int, int], lab: tuple[float, float, float]) -> None:
    colour = to_cielab(rgb)
    assert colour.lab == pytest.approx(lab, abs=0.1)
    assert colour.to_rgb() == pytest.approx(rgb, abs=1)
    assert all(0 <= v <= 0xFFFF for v in colour.value)  # DICOM's unsigned 16-bit encoding


def test_derived_colours_survive_the_cielab_round_trip() -> None:
    for i, name in enumerate(ORGANS, start=1):
        rgb = derived_rgb(name, i)
        assert to_cielab(rgb).to_rgb() == pytest.approx(rgb, abs=1), name
