"""pynetdicom's module-wide switches the node relies on, kept apart from the modules that need them so
that setting them at start-up (:func:`dicom_node.process.configure_process`) imports only pynetdicom:
``dicom-node send`` and ``echo`` start without loading the receiver, the journal or the config models."""

from __future__ import annotations

from pynetdicom import _config


def stream_received_datasets() -> None:
    """Make pynetdicom stream every received C-STORE data set into a temp file (in the system temp
    folder, ``TMPDIR``) instead of memory, so an instance of any size costs the receiver one PDU of
    memory, not its size. pynetdicom has no size threshold: the switch is module-wide and all or
    nothing, and every SCP in the process (the node's, the demo's store receiver) reads the data set
    from that file. Set once at start-up (:func:`dicom_node.process.configure_process`)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
