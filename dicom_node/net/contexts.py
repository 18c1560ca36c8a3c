"""Presentation contexts the SCP accepts: Verification and every storage SOP class, each with the
uncompressed and common compressed transfer syntaxes (the node files data sets as they come and never
decodes them on receipt).

Storage SOP classes pynetdicom does not know (vendors' private classes such as Siemens CSA Non-Image
``1.3.12.2.1107.5.9.1``, or public classes newer than pynetdicom) are accepted too: a PACS pushing a
study must never fail on one vendor object. pynetdicom's unrestricted storage service does this
(:func:`accept_every_storage_class`, a process-wide switch set once when the SCP is built): any
proposed private or unknown abstract syntax is accepted with the first transfer syntax proposed for it,
and its C-STOREs reach our storage handler. :func:`prefer_our_syntaxes` (run on every association
request) first puts the proposed syntaxes in our order of preference, so the choice stays ours
(uncompressed first) for known and unknown classes alike.

:func:`is_image_storage` says which SOP classes are images a model may be given; everything else is
filed, journaled and forwarded, never inferred.
"""

from __future__ import annotations

from typing import cast

import pydicom.uid
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, _config
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def _optional_syntaxes(*names: str) -> list[str]:
    """Transfer syntaxes the installed pydicom knows (HTJ2K came with pydicom 3)."""
    return [str(getattr(pydicom.uid, n)) for n in names if hasattr(pydicom.uid, n)]


# Data set encodings we accept. When a peer proposes several in one context, pynetdicom takes the first
# of this list: uncompressed first, so a peer holding uncompressed originals is never asked to
# compress them (lossy!) for us; a peer holding compressed files proposes their own syntax anyway.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy or lossless)
    RLELossless,
    *_optional_syntaxes("HTJ2KLossless", "HTJ2KLosslessRPCL", "HTJ2K"),
)
VERIFICATION_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)


def supported_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class pynetdicom knows (170 in 3.0.4), each with
    :data:`TRANSFER_SYNTAXES`. (A requestor may propose at most 128 contexts per association.)"""
    contexts = [build_context(Verification, list(VERIFICATION_SYNTAXES))]
    for cx in AllStoragePresentationContexts:
        contexts.append(build_context(cast(str, cx.abstract_syntax), list(TRANSFER_SYNTAXES)))
    return contexts


def accept_every_storage_class() -> None:
    """Accept C-STOREs of every storage-like SOP class, private and unknown ones included (pynetdicom
    keeps this switch module-wide; the node sets it once when its SCP is built)."""
    _config.UNRESTRICTED_STORAGE_SERVICE = True


_PREFERENCE = {uid: rank for rank, uid in enumerate(TRANSFER_SYNTAXES)}


def prefer_our_syntaxes(proposed: list[PresentationContext]) -> None:
    """Reorder each proposed context's transfer syntaxes (in place): ours first in our order of
    preference, then any we do not know in the peer's order. The acceptor takes the first."""
    for cx in proposed:
        syntaxes: list[str | bytes | UID] = list(cx.transfer_syntax)
        ordered = sorted(syntaxes, key=lambda ts: _PREFERENCE.get(str(ts), len(_PREFERENCE)))
        if ordered != syntaxes:
            cx.transfer_syntax = ordered


# Image SOP classes whose pixel data are not a source image for a model.
_NOT_MODEL_INPUT = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image Storage
        "1.2.840.10008.5.1.4.1.1.481.22",  # Enhanced RT Image Storage
        "1.2.840.10008.5.1.4.1.1.481.23",  # Enhanced Continuous RT Image Storage
    }
)


def is_image_storage(sop_class_uid: str) -> bool:
    """True for a standard image storage SOP class a model may segment (CT, MR, PET, ...); False for
    private classes, non-image objects (SR, SEG, RT structures, raw data, documents, presentation
    states) and RT images."""
    name = UID(sop_class_uid).name
    return "Image Storage" in name and sop_class_uid not in _NOT_MODEL_INPUT
