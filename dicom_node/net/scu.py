"""C-ECHO and C-STORE as a service user: used by ``dicom-node echo`` / ``send`` and by the sender.

Files are sent as they are, in their own transfer syntax, without decoding: the presentation contexts
proposed are exactly the (SOP class, transfer syntax) pairs of the files, and each file's data set bytes
go from disk to the socket (:mod:`dicom_node.net.store_scu`, the node's own stdlib upper layer; not
pynetdicom's requestor, see there why). Before the association only each file's meta group is read
(:mod:`dicom_node.storage.file_meta`). A peer may take at most 128 presentation contexts per
association, so more pairs than that are sent over several associations, one after the other.

Each SOP class with a file in another syntax (compressed, deflated, big endian) is also proposed once
with the uncompressed little endian syntaxes. A file goes as it is whenever the peer accepted its own
pair; only when the peer accepted none for it is it transcoded (decoded with pydicom, imported then,
sent uncompressed), with a warning naming the file, the syntaxes and the peer. When not even that was
accepted, the file fails with its SOP class, its syntax and what the peer accepted, in words.

Neither pydicom nor pynetdicom is imported unless a file needs transcoding or a failure needs words
from their tables: ``dicom-node send`` starts in a fraction of their import time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from dicom_node.errors import CannotUnderstandError, DeliveryError, InvalidUIDError
from dicom_node.net.dimse_status import is_stored
from dicom_node.net.peers import Peer
from dicom_node.net.store_scu import VERIFICATION, Association, AssociationError, FileReadError, uid_name
from dicom_node.storage.file_meta import NotPart10Error, read_file_meta

logger = logging.getLogger(__name__)

MAX_CONTEXTS = 128
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
FALLBACK_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


class SendResult(NamedTuple):
    """Outcome of one file: the peer's status, or None with ``error`` when it was not sent or no
    response came."""

    path: Path
    status: int | None
    error: str = ""
    skipped: bool = False  # not an instance to send (DICOMDIR, not a DICOM file): no failure

    @property
    def ok(self) -> bool:
        """Stored: success, or a warning (stored with changes)."""
        return self.status is not None and is_stored(self.status)


@dataclass(frozen=True)
class _Planned:
    path: Path
    sop_class: str
    transfer_syntax: str
    sop_instance: str = ""
    dataset_offset: int = 0


def iter_files(paths: Iterable[Path]) -> list[Path]:
    """Files named and files under named folders (recursive, sorted, hidden entries skipped; links to
    folders not followed)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(_files_under(path)))
        else:
            out.append(path)
    return out


def _files_under(folder: Path) -> Iterator[Path]:
    """Files below ``folder`` whose path below it has no hidden part (one ``scandir`` per folder, no
    ``stat`` per file)."""
    try:
        with os.scandir(folder) as entries:
            found = list(entries)
    except PermissionError:
        return
    for entry in found:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _files_under(Path(entry.path))
            elif entry.is_file():
                yield Path(entry.path)
        except OSError:
            continue


def echo(peer: Peer, calling_ae: str = "DICOMNODE", timeout: float = 30.0) -> int:
    """C-ECHO ``peer``; returns the response status. Raises DeliveryError if no association or no
    response."""
    syntaxes = (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
    try:
        assoc = Association.request(peer, calling_ae, [(VERIFICATION, syntaxes)], timeout)
    except AssociationError as exc:
        raise DeliveryError(f"C-ECHO to {peer}: {exc}") from exc
    try:
        context_id = next(iter(assoc.accepted()[VERIFICATION].values()))
        status = assoc.echo(context_id)
    except AssociationError as exc:
        raise DeliveryError(f"C-ECHO to {peer}: no response ({exc})") from exc
    except BaseException:
        assoc.abort()
        raise
    assoc.release()
    return status


class _Stopped(Exception):
    """Sending was interrupted in another thread."""


class _NotAnInstance(Exception):
    """A file that holds no instance to send: a DICOMDIR, or not a DICOM Part 10 file."""


DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


def _plan(path: Path) -> _Planned:
    """Read a file's meta group: the SOP class and transfer syntax it is sent with (the command
    carries the meta's Media Storage SOP Class/Instance UIDs, the data set goes as stored)."""
    try:
        meta = read_file_meta(path)
    except NotPart10Error as exc:
        raise _NotAnInstance(str(exc)) from exc
    except OSError as exc:
        raise CannotUnderstandError(f"cannot read: {exc.strerror or exc}") from exc
    if meta.sop_class == DICOMDIR_CLASS:
        raise _NotAnInstance("a DICOMDIR")
    if not meta.sop_class or not meta.sop_instance:
        raise CannotUnderstandError("file meta lacks Media Storage SOP Class/Instance UID")
    return _Planned(path, meta.sop_class, meta.transfer_syntax, meta.sop_instance, meta.dataset_offset)


def send_files(
    paths: Sequence[Path],
    peer: Peer,
    calling_ae: str = "DICOMNODE",
    *,
    timeout: float = 30.0,
    on_result: Callable[[SendResult], None] | None = None,
    associations: int = 1,
) -> list[SendResult]:
    """C-STORE files to ``peer``, one association per up-to-128 (SOP class, transfer syntax) pairs.

    Returns one result per path, in the order given; ``on_result`` sees each as it is known (one call
    at a time). DICOMDIRs and files that are not DICOM are skipped (``skipped``); unreadable DICOM
    files fail; a failed association fails its files. With ``associations`` > 1 the files are cut in
    that many consecutive parts sent at the same time over their own associations (each waits for
    every response; parallel associations hide that round trip). An exception in the calling
    thread (Ctrl-C) aborts every association and is raised again."""
    results: dict[int, SendResult] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def done(index: int, result: SendResult) -> None:
        with lock:
            results[index] = result
            if on_result is not None:
                on_result(result)

    planned: list[tuple[int, _Planned]] = []
    for index, path in enumerate(paths):
        try:
            planned.append((index, _plan(Path(path))))
        except _NotAnInstance as exc:
            done(index, SendResult(Path(path), None, f"skipped: {exc}", skipped=True))
        except (CannotUnderstandError, InvalidUIDError) as exc:
            done(index, SendResult(Path(path), None, f"not sent: {exc}"))

    def send_part(part: list[tuple[int, _Planned]]) -> None:
        for batch in _batches(part):
            if stop.is_set():
                return
            _send_batch(batch, peer, calling_ae, timeout, done, stop)

    parts = _split(planned, max(1, associations))
    if len(parts) <= 1:
        send_part(planned)
    else:
        threads = [
            threading.Thread(target=send_part, args=(part,), name=f"send-{k}") for k, part in enumerate(parts)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # a plain join() would not let Ctrl-C in
        except BaseException:
            stop.set()
            for thread in threads:
                thread.join()
            raise
    return [results[i] for i in range(len(paths))]


def _split(planned: list[tuple[int, _Planned]], n: int) -> list[list[tuple[int, _Planned]]]:
    """``n`` consecutive parts of nearly equal size (fewer when there are fewer files)."""
    n = min(n, len(planned))
    if n <= 1:
        return [planned]
    size, extra = divmod(len(planned), n)
    parts, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        parts.append(planned[start:end])
        start = end
    return parts


def _batches(planned: list[tuple[int, _Planned]]) -> list[list[tuple[int, _Planned]]]:
    """Group files so that each group needs at most MAX_CONTEXTS contexts (one per pair plus one
    uncompressed fallback per SOP class; file order kept within)."""
    groups: list[list[tuple[int, _Planned]]] = []
    current: list[tuple[int, _Planned]] = []
    pairs: set[tuple[str, str]] = set()
    classes: set[str] = set()
    for item in planned:
        pair = (item[1].sop_class, item[1].transfer_syntax)
        fallback = {pair[0]} if pair[1] not in FALLBACK_SYNTAXES else set()
        if current and len(pairs | {pair}) + len(classes | fallback) > MAX_CONTEXTS:
            groups.append(current)
            current, pairs, classes = [], set(), set()
        pairs.add(pair)
        classes |= fallback
        current.append(item)
    if current:
        groups.append(current)
    return groups


def _needing_fallback(planned: Iterable[_Planned]) -> set[str]:
    """SOP classes with a file in a syntax other than the uncompressed little endian ones."""
    return {p.sop_class for p in planned if p.transfer_syntax not in FALLBACK_SYNTAXES}


def _transcoded(item: _Planned, peer: Peer, syntax: str) -> bytes:
    """The file's data set decoded and encoded again in the uncompressed ``syntax`` (pydicom, imported
    here: only such files pay for it)."""
    from pydicom import dcmread
    from pydicom.uid import UID
    from pynetdicom.dsutils import encode

    logger.warning(
        "%s: %s accepts no context for %s in %s; sending it transcoded to an uncompressed syntax",
        item.path.name,
        peer,
        uid_name(item.sop_class),
        uid_name(item.transfer_syntax),
    )
    ds = dcmread(item.path)
    if UID(item.transfer_syntax).is_compressed:
        # the same instance in another transfer syntax keeps its SOP Instance UID (PS3.5 10)
        ds.decompress(generate_instance_uid=False)
    raw = encode(ds, syntax == IMPLICIT_VR_LITTLE_ENDIAN, True)
    if raw is None:
        raise ValueError(f"cannot encode the data set in {uid_name(syntax)}")
    return raw


def _send_batch(
    batch: list[tuple[int, _Planned]],
    peer: Peer,
    calling_ae: str,
    timeout: float,
    done: Callable[[int, SendResult], None],
    stop: threading.Event | None = None,
) -> None:
    contexts: list[tuple[str, Sequence[str]]] = [
        (sop_class, (syntax,))
        for sop_class, syntax in sorted({(p.sop_class, p.transfer_syntax) for _, p in batch})
    ]
    contexts += [
        (sop_class, FALLBACK_SYNTAXES) for sop_class in sorted(_needing_fallback([p for _, p in batch]))
    ]
    try:
        assoc = Association.request(peer, calling_ae, contexts, timeout)
    except AssociationError as exc:
        for index, item in batch:
            done(index, SendResult(item.path, None, str(exc)))
        return
    accepted = assoc.accepted()
    lost = ""  # why the association ended early
    try:
        for index, item in batch:
            if stop is not None and stop.is_set():
                raise _Stopped
            if lost:
                done(index, SendResult(item.path, None, lost))
                continue
            syntaxes = accepted.get(item.sop_class, {})
            fallback = [ts for ts in FALLBACK_SYNTAXES if ts in syntaxes]
            try:
                if item.transfer_syntax in syntaxes:
                    status, comment = assoc.store(
                        syntaxes[item.transfer_syntax],
                        item.sop_class,
                        item.sop_instance,
                        (item.path, item.dataset_offset),
                    )
                elif fallback:
                    data = _transcoded(item, peer, fallback[0])
                    status, comment = assoc.store(
                        syntaxes[fallback[0]], item.sop_class, item.sop_instance, data
                    )
                else:
                    offered = ", ".join(sorted(uid_name(t) for t in syntaxes)) or "none"
                    done(
                        index,
                        SendResult(
                            item.path,
                            None,
                            f"no accepted presentation context for {uid_name(item.sop_class)} in"
                            f" {uid_name(item.transfer_syntax)} or uncompressed (peer accepted: {offered})",
                        ),
                    )
                    continue
            except FileReadError as exc:
                done(index, SendResult(item.path, None, f"not sent: {exc}"))
                continue
            except AssociationError as exc:
                lost = str(exc)
                done(index, SendResult(item.path, None, f"no response: {lost}"))
                continue
            except (ValueError, NotImplementedError, RuntimeError, AttributeError, OSError) as exc:
                # the file cannot be decoded here (transcoding)
                done(index, SendResult(item.path, None, f"not sent: {exc}"))
                continue
            done(index, SendResult(item.path, status, comment))
    except _Stopped:  # another thread was interrupted: end this association too
        assoc.abort()
        return
    except BaseException:  # Ctrl-C or worse: do not wait for the peer, end the association now
        assoc.abort()
        raise
    assoc.release()
