"""Presentation contexts the SCP accepts: Verification and every storage SOP class, each with the
uncompressed and common compressed transfer syntaxes (the node files data sets as they come and never
decodes them on receipt)."""

from __future__ import annotations

from typing import cast

import pydicom.uid
from pydicom.uid import (
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
from pynetdicom import AllStoragePresentationContexts
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
