"""Process-wide settings, made once at start-up and never from worker threads.

Some libraries keep their switches for the whole process: pynetdicom in its module ``_config``, Python
in ``sys.stdout``, torch in its thread pool. Changing them per call from threads races (one thread's
change is another's surprise), so each is set once, before any thread of ours runs:

- :func:`configure_process` (called by the ``dicom-node`` entry point for every command but ``send``
  and ``echo``, which use neither pynetdicom nor pydicom nor inference, and by :meth:`Node.start`):
  pynetdicom streams received data sets to disk
  (``STORE_RECV_CHUNKED_DATASET``, see :func:`dicom_node.net.switches.stream_received_datasets`), and
  nnU-Net's prints from worker threads are
  captured per thread (:func:`inference.stdout_capture.install`), and pydicom reads values without a
  warning per slightly invalid value (:func:`quiet_value_validation`);
- building the SCP (:func:`dicom_node.net.scp_server.build_ae`, once per node) switches on pynetdicom's
  unrestricted storage service, so that private and unknown storage SOP classes are accepted
  (:func:`dicom_node.net.contexts.accept_every_storage_class`);
- building the in-process executor (:class:`inference.executor.InProcessExecutor`) sets torch's CPU
  threads and installs the same stdout capture, for programs that use it without the node.
"""

from __future__ import annotations

import pydicom.config

from dicom_node.net.switches import stream_received_datasets
from inference import stdout_capture


def configure_process() -> None:
    """Make the process-wide settings the node relies on. Idempotent; call it from the main thread
    before starting threads."""
    stream_received_datasets()
    stdout_capture.install()
    quiet_value_validation()


def quiet_value_validation() -> None:
    """pydicom checks each value it converts against its VR and logs a warning for every slightly
    invalid one (an IS of '3.0', a DS too long), common in real data. The header reader converts
    every element of every received header (:mod:`dicom_node.storage.header`), so the log would
    carry one such line per element per instance: the node reads values as they are and refuses only
    what cannot be parsed (an unknown VR, a length that does not fit)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
