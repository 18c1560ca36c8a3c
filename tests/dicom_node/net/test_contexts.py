"""Accepted presentation contexts: every storage class, uncompressed first, compressed accepted."""

from __future__ import annotations

from pynetdicom import AllStoragePresentationContexts

from dicom_node.net.contexts import TRANSFER_SYNTAXES, is_image_storage, supported_contexts


def test_every_storage_class_with_every_syntax() -> None:
    contexts = supported_contexts()
    by_class = {str(cx.abstract_syntax): list(cx.transfer_syntax) for cx in contexts}
    assert by_class["1.2.840.10008.1.1"]  # Verification
    storage = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    assert len(storage) >= 120 and storage <= set(by_class)
    assert by_class["1.2.840.10008.5.1.4.1.1.66.4"] == list(TRANSFER_SYNTAXES)  # Segmentation


def test_uncompressed_preferred_and_compressed_accepted() -> None:
    assert TRANSFER_SYNTAXES[:3] == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
    for uid in [
        "1.2.840.10008.1.2.1.99",  # deflated
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.57",  # JPEG lossless
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.5",  # RLE lossless
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    ]:
        assert uid in TRANSFER_SYNTAXES


def test_only_standard_image_classes_are_model_input() -> None:
    assert is_image_storage("1.2.840.10008.5.1.4.1.1.2")  # CT
    assert is_image_storage("1.2.840.10008.5.1.4.1.1.4.1")  # Enhanced MR
    assert not is_image_storage("1.3.12.2.1107.5.9.1")  # Siemens CSA Non-Image (private)
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.66.4")  # Segmentation
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.88.22")  # Enhanced SR
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.481.1")  # RT Image
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.104.1")  # Encapsulated PDF
