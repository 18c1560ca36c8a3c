"""Hot reload of routing rules when their file changes on disk.

:class:`RulesWatcher` watches the *folder* of the rules file with watchdog (editors and config
managers replace a file by writing a temporary one and renaming it over the old one, which a watch on
the file itself would miss), waits until the events have been quiet for a short debounce, and then
reloads if the file's content changed. A new file that does not load (YAML error, validation error,
unknown model or destination) is refused with a log message naming the problem; the rules in effect
stay. Accepted rules are handed to ``on_change`` (called on the watcher's thread).

:func:`config_rules_loader` builds the ``load`` function for a node configuration: for a config with a
``rules_file`` it reloads that file; for inline rules it reloads the config file itself, applies only
its ``rules`` and logs ``restart needed for: <sections>`` when other sections differ from the running
ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from dicom_node.config import NodeConfig, load_config, load_rules_file
from dicom_node.errors import ConfigError
from dicom_node.pipeline.routing import ModelResolver, RuleSet

logger = logging.getLogger(__name__)

# Events that can mean new content. Opening/reading the file (ours included) is not among them.
_CONTENT_EVENTS = frozenset(
    {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_CLOSED, EVENT_TYPE_DELETED}
)


class _FolderEvents(FileSystemEventHandler):
    """Forwards events that may concern ``name`` to ``notify``."""

    def __init__(self, name: str, notify: Callable[[], None]) -> None:
        self._name = name
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CONTENT_EVENTS:
            return
        names = {os.path.basename(os.fsdecode(event.src_path))}
        if event.dest_path:
            names.add(os.path.basename(os.fsdecode(event.dest_path)))
        # Any rename counts: Kubernetes ConfigMaps swap a symlinked folder, not the file.
        if self._name in names or event.event_type == EVENT_TYPE_MOVED:
            self._notify()


class RulesWatcher:
    """Reload rules from ``path`` when its content changes; see the module docstring."""

    def __init__(
        self,
        path: Path,
        load: Callable[[], RuleSet],
        on_change: Callable[[RuleSet], None],
        *,
        debounce_seconds: float = 0.2,
    ) -> None:
        self.path = Path(path).absolute()
        self._load = load
        self._on_change = on_change
        self._debounce = debounce_seconds
        self._cond = threading.Condition()
        self._due: float | None = None
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()
        # The file's content now is taken as the rules in effect (the caller has just loaded them).
        self._applied_digest: str | None = _digest(self._read())
        self._seen_digest: str | None = self._applied_digest  # last looked at (applied or refused)
        self._missing_logged = False

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start watching (changes made since construction are picked up by the first event)."""
        if self._thread is not None:
            raise RuntimeError("RulesWatcher already started")
        self._stopping = False
        observer = Observer()
        observer.schedule(_FolderEvents(self.path.name, self._notify), str(self.path.parent), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="rules-watch", daemon=True)
        self._thread.start()
        logger.info("watching %s for rule changes", self.path)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RulesWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reload

    def check_now(self) -> bool:
        """Reload if the file's content differs from what was seen last. Returns True when new
        rules were applied."""
        with self._check_lock:
            content = self._read()
            digest = _digest(content)
            if content is None or digest is None:
                if not self._missing_logged:
                    logger.warning("rules file %s is missing; keeping the current rules", self.path)
                    self._missing_logged = True
                return False
            self._missing_logged = False
            if digest == self._seen_digest:
                return False
            self._seen_digest = digest
            if digest == self._applied_digest:
                logger.info("%s is back to the rules in effect; nothing to reload", self.path)
                return False
            if not content.strip():
                # Most likely caught between an editor's truncate and write; removing every rule
                # takes an explicit "rules: []" (or "[]" in a rules file).
                logger.error(
                    "refused new rules from %s: the file is empty; keeping the current ones", self.path
                )
                return False
            try:
                rules = self._load()
            except ConfigError as exc:
                logger.error("refused new rules from %s, keeping the current ones: %s", self.path, exc)
                return False
            except Exception:  # a reload must never take the node down; logged with the traceback
                logger.exception("refused new rules from %s, keeping the current ones", self.path)
                return False
            self._applied_digest = digest
            logger.info("reloaded %d rule(s) from %s: %s", len(rules), self.path, ", ".join(rules.names))
            try:
                self._on_change(rules)
            except Exception:
                logger.exception("applying reloaded rules from %s failed", self.path)
            return True

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("cannot read rules file %s: %s", self.path, exc)
            return None

    def _notify(self) -> None:
        with self._cond:
            self._due = time.monotonic() + self._debounce
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._due is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                assert self._due is not None
                delay = self._due - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)  # a new event may push the deadline further
                    continue
                self._due = None
            self.check_now()


def _digest(content: bytes | None) -> str | None:
    return None if content is None else hashlib.sha256(content).hexdigest()


def config_rules_loader(config: NodeConfig, catalog: ModelResolver | None = None) -> Callable[[], RuleSet]:
    """The ``load`` function for the rules of the running ``config``.

    New rules are validated against the running configuration (its destinations and model spec), since
    only the rules change without a restart."""

    def load_from_rules_file() -> RuleSet:
        assert config.rules_file is not None
        rules = load_rules_file(config.rules_file)
        return RuleSet.from_config(config.with_rules(rules), catalog)

    def load_from_config_file() -> RuleSet:
        assert config.config_path is not None
        new = load_config(config.config_path)
        changed = [
            name
            for name in type(config).model_fields
            if name not in ("rules", "config_path") and getattr(new, name) != getattr(config, name)
        ]
        if changed:
            logger.warning(
                "%s: restart needed for: %s (only rules are reloaded)", config.config_path, ", ".join(changed)
            )
        return RuleSet.from_config(config.with_rules(new.rules), catalog)

    if config.rules_file is not None:
        return load_from_rules_file
    if config.config_path is None:
        raise ConfigError("no file to reload rules from: the config was not loaded from a file")
    return load_from_config_file


def watch_config_rules(
    config: NodeConfig,
    on_change: Callable[[RuleSet], None],
    catalog: ModelResolver | None = None,
    *,
    debounce_seconds: float = 0.2,
) -> RulesWatcher:
    """A (not yet started) watcher for the rules of ``config``: its ``rules_file``, else the config
    file itself."""
    path = config.watched_rules_path
    if path is None:
        raise ConfigError("no file to watch for rules: the config was not loaded from a file")
    loader = config_rules_loader(config, catalog)
    return RulesWatcher(path, loader, on_change, debounce_seconds=debounce_seconds)
