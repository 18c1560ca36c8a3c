"""The node's exception hierarchy. Each carries a message meant for the log and the journal."""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error raised on purpose by ``dicom_node``."""


class ConfigError(NodeError):
    """The configuration (or a rules file) is invalid; the message says where and why."""


class InvalidUIDError(NodeError):
    """A UID that may not be used to build a path or a record."""


class StorageError(NodeError):
    """A received instance could not be filed."""


class OutOfResourcesError(StorageError):
    """Disk full or below the configured free-space reserve (answered 0xA700)."""


class DatasetMismatchError(StorageError):
    """The dataset does not match the SOP class/instance of the request (answered 0xA900)."""


class SopClassNotSupportedError(StorageError):
    """A C-STORE whose SOP class is not the one of the presentation context it came on (answered
    0x0122)."""


class CannotUnderstandError(StorageError):
    """The dataset cannot be parsed or lacks what filing needs (answered 0xC000-class)."""


class DatasetTooLargeError(CannotUnderstandError):
    """A data set exceeds a size limit of the node, e.g. a deflated one inflating beyond it
    (answered 0xA700: refused, out of resources; never filed, in part or whole)."""


class DeliveryError(NodeError):
    """A result could not be sent to a destination."""


class MissingAttributeError(CannotUnderstandError):
    """A dataset lacks an attribute filing needs (answered 0xC002)."""


class UnreadableDatasetError(CannotUnderstandError):
    """A dataset (or its header) cannot be parsed (answered 0xC003)."""


class OverlayError(NodeError):
    """A segmentation overlay picture cannot be drawn from the given arrays."""


class DemoError(NodeError):
    """``dicom-node demo`` could not complete; the message names the stage and the reason."""


class RetentionError(NodeError):
    """A series cannot be purged safely (e.g. a path outside storage_dir); it is kept."""
