"""The node: wires the parts together and runs them.

``Node(config).start()`` opens the journal and puts work that was in flight back in the queue, repairs
the spool, loads the model catalog and the rules, builds the executor, then starts (in this order)
the sender, the inference workers, the completion loop, the retention sweep, the drop-folder watcher,
the rules watcher, the SCP and last the HTTP server (when the config has an ``http:`` section), so
nothing is accepted before everything that handles it runs.
``stop()`` goes the other way: it stops accepting associations (letting a store in progress finish),
stops the threads and closes the journal. Signal handling belongs to the command that runs the node
(``serve``), not here.

Parts meet only through the journal and wake-up callbacks:
receive -> ``on_instance``/``on_released`` -> completion -> ``on_jobs`` -> workers -> ``on_deliveries``
-> sender.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from dicom_node.config import NodeConfig
from dicom_node.errors import ConfigError, NodeError
from dicom_node.http.metrics import NodeMetrics
from dicom_node.net.receive import Receiver
from dicom_node.net.receive_child import lock_dir
from dicom_node.net.receive_processes import ReceiveProcesses
from dicom_node.net.scp_server import ScpServer
from dicom_node.pipeline.completion import CompletionLoop
from dicom_node.pipeline.executors import build_executors, worker_threads
from dicom_node.pipeline.loop import Clock
from dicom_node.pipeline.routing import RuleSet
from dicom_node.pipeline.rules_watch import watch_config_rules
from dicom_node.pipeline.sending import Sender
from dicom_node.pipeline.worker import Worker
from dicom_node.process import configure_process
from dicom_node.storage.access import StorageLock, apply_permissions, lock_storage
from dicom_node.storage.dropfolder import DropFolder
from dicom_node.storage.filing import Spool
from dicom_node.storage.ingest import Ingestor
from dicom_node.storage.journal import Journal
from dicom_node.storage.journal.opening import open_journal
from dicom_node.storage.quota import CallingAeQuotas
from dicom_node.storage.retention import RetentionService
from dicom_node.storage.series_locks import SeriesLocks
from inference.api import Executor
from inference.errors import InferenceError

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # running associations get this long to finish when the node stops

MB = 1024 * 1024


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class Node:
    """One DICOM node (see the module docstring). ``executor`` replaces the ones built from the config
    (:func:`~dicom_node.pipeline.executors.build_executors`, one per device, each with its own
    worker; tests, a remote executor) and stays the caller's to close; those built here are closed
    by :meth:`stop`. ``clock`` is the wall clock
    used for journal times; ``retention_interval`` is the period of the retention sweep (the first
    runs after at most a minute)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        executor: Executor | None = None,
        clock: Clock = time.time,
        retention_interval: float = 600.0,
    ) -> None:
        self.config = config
        self.storage_dir = Path(config.node.storage_dir)
        self._executor = executor
        self._built_executors: list[Executor] = []  # built here from the config: closed by stop()
        self._clock = clock
        self._retention_interval = retention_interval
        self._rules_lock = threading.Lock()
        self._rules = RuleSet()
        self.journal: Journal | None = None
        self._storage_lock: StorageLock | None = None
        self.spool: Spool | None = None
        self.sender: Sender | None = None
        self.worker: Worker | None = None  # the first of ``workers``
        self.workers: list[Worker] = []  # one per device
        self.completion: CompletionLoop | None = None
        self.retention: RetentionService | None = None
        self.server: ScpServer | None = None
        self.receive_processes: ReceiveProcesses | None = None
        self.ingestor: Ingestor | None = None
        self.catalog: Any = None
        self.executors: list[Executor] = []  # one per inference device
        self.http: Any = None  # dicom_node.http.server.HttpServer when configured
        self.metrics = NodeMetrics()  # this node's Prometheus registry
        self._watchers: list[_Stoppable] = []
        self._echo_thread: threading.Thread | None = None
        self._started = False

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The port the SCP listens on (the real one when the configuration says 0)."""
        if self.server is None:
            raise RuntimeError("the node is not started")
        return self.server.port

    @property
    def ae_title(self) -> str:
        return self.config.node.ae_title[0]

    @property
    def address(self) -> str:
        """``AE@HOST:PORT`` of the running SCP."""
        return f"{self.ae_title}@{self.config.node.host}:{self.port}"

    @property
    def rules(self) -> RuleSet:
        with self._rules_lock:
            return self._rules

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._started:
            raise RuntimeError("the node is already started")
        self._started = True
        configure_process()  # process-wide switches, before any of our threads runs
        cfg = self.config
        apply_permissions(self.storage_dir, cfg.node.storage_permissions)
        self._storage_lock = lock_storage(self.storage_dir)  # before anything touches the folder
        (self.storage_dir / "outputs").mkdir(exist_ok=True)
        journal = self.journal = open_journal(self.storage_dir)
        journal.recover()
        spool = self.spool = Spool(
            self.storage_dir,
            fsync=cfg.node.fsync,
            min_free_bytes=cfg.node.min_free_disk_mb * MB,
            max_dataset_bytes=cfg.node.max_dataset_bytes,
        )
        spool.reconcile(journal)

        self.metrics.start(journal, self._clock())
        catalog = self.catalog = self._load_catalog()
        try:
            self._rules = RuleSet.from_config(cfg, catalog)
        except ConfigError as exc:
            raise ConfigError(f"{cfg.config_path or 'config'}: rules: {exc}") from exc
        executors: list[Executor] = []
        if self._executor is not None:
            executors = [self._executor]
        elif catalog is not None:
            executors = self._built_executors = build_executors(cfg.inference, catalog)
        self.executors = executors

        self.sender = Sender(
            journal,
            cfg.destinations,
            storage_dir=self.storage_dir,
            calling_ae=self.ae_title,
            settings=cfg.sending,
            clock=self._clock,
        )
        self.sender.start()
        self._check_destinations()
        for executor in executors:
            worker = Worker(
                journal,
                executor,
                storage_dir=self.storage_dir,
                empty_result=cfg.inference.empty_result,
                max_attempts=cfg.inference.max_attempts,
                max_dataset_bytes=cfg.node.max_dataset_bytes,
                on_deliveries=self.sender.wake,
                threads=worker_threads(cfg.inference),
                clock=self._clock,
            )
            worker.start()
            self.workers.append(worker)
        self.worker = self.workers[0] if self.workers else None
        if not executors:
            logger.info("no model spec: received series are filed and routed, nothing is inferred")
        self.completion = CompletionLoop(
            journal,
            storage_dir=self.storage_dir,
            rules=lambda: self.rules,
            on_jobs=self._wake_workers,
            on_deliveries=self.sender.wake,
            clock=self._clock,
        )
        self.completion.start()
        # filing and retention purges of one series never interleave (in every receive process)
        locks = SeriesLocks(lock_dir=lock_dir(self.storage_dir) if cfg.node.receive_processes > 1 else None)
        self.retention = RetentionService(
            journal,
            storage_dir=self.storage_dir,
            retention_days=cfg.node.retention_days,
            locks=locks,
            clock=self._clock,
            interval=self._retention_interval,
            first_delay=min(60.0, self._retention_interval),
        )
        self.retention.start()

        quotas = (
            CallingAeQuotas(journal, cfg.node.calling_ae_quota_mb) if cfg.node.calling_ae_quota_mb else None
        )
        ingestor = self.ingestor = Ingestor(
            spool, journal, clock=self._clock, on_instance=self._on_instance, locks=locks, quotas=quotas
        )
        self._start_drop_folder(ingestor)
        self._start_rules_watcher(catalog)
        receiver = Receiver(
            ingestor,
            ae_titles=cfg.node.ae_title,
            allowed_calling_aes=cfg.node.allowed_calling_aes,
            calling_ae_hosts=cfg.node.calling_ae_hosts,
            on_released=self._on_released,
        )
        server = ScpServer(cfg.node, receiver)
        try:
            self.server = server.start()
        except OSError as exc:
            raise NodeError(f"cannot listen on {cfg.node.host}:{cfg.node.port}: {exc}") from exc
        if cfg.node.receive_processes > 1:
            self.receive_processes = ReceiveProcesses(
                cfg.node,
                self.server,
                on_instance=self._on_instance,
                on_released=self._on_released,
                log_format=cfg.logging.format,
            ).start(grace_seconds=STOP_GRACE_SECONDS)
        self._start_http()
        logger.info("node %s ready; storage %s", self.address, self.storage_dir)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Stop accepting, finish the store in progress, stop the threads, close the journal.
        Safe to call more than once and after a failed start."""
        if self.http is not None:
            self.http.stop()
            self.http = None
        for part in (self.retention, *self.workers, self.completion, self.sender):
            if part is not None:
                part.request_stop()  # no new jobs or sends from here on
        if self.receive_processes is not None:
            self.receive_processes.request_stop()  # they wind down while our own receiver does
        if self.server is not None:
            self.server.stop(grace_seconds)
            self.server = None
        if self.receive_processes is not None:
            self.receive_processes.stop(timeout=grace_seconds + 10.0)
            self.receive_processes = None
        for watcher in reversed(self._watchers):
            try:
                watcher.stop()
            except Exception:
                logger.exception("stopping %s failed", type(watcher).__name__)
        self._watchers = []
        for part in (self.retention, self.completion, *self.workers, self.sender):
            if part is not None:
                part.stop()  # a running job gets a moment to finish; else it is recovered at start
        if self._echo_thread is not None:
            self._echo_thread.join(timeout=15)  # it writes to the journal: let it finish first
            self._echo_thread = None
        self.retention = self.completion = self.worker = self.sender = None
        self.workers = []
        self.ingestor = self.catalog = None
        self.executors = []
        for built in self._built_executors:
            try:
                built.close()
            except Exception:
                logger.exception("closing an executor failed")
        self._built_executors = []
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._storage_lock is not None:
            self._storage_lock.release()
            self._storage_lock = None
        self._started = False

    def __enter__(self) -> Node:
        try:
            self.start()
        except BaseException:
            self.stop()  # whatever had started
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ callbacks

    def wake_workers(self) -> None:
        """There are new jobs (an operator action, an HTTP request)."""
        self._wake_workers()

    def wake_sender(self) -> None:
        """There are new deliveries."""
        if self.sender is not None:
            self.sender.wake()

    def reload_rules(self) -> RuleSet:
        """Load the rules from their file now and apply them (as the rules watcher does when the file
        changes). Raises :class:`ConfigError` and keeps the rules in effect if they do not load."""
        from dicom_node.pipeline.rules_watch import config_rules_loader

        rules = config_rules_loader(self.config, self.catalog)()
        self._set_rules(rules)
        logger.info("rules reloaded on request: %s", ", ".join(rules.names) or "none")
        return rules

    @property
    def http_port(self) -> int:
        """The port the HTTP server listens on (the real one when the configuration says 0)."""
        if self.http is None:
            raise RuntimeError("the HTTP server is not running")
        return int(self.http.port)

    def _on_instance(self, series_uid: str) -> None:
        self.metrics.instances_received.inc()
        if self.completion is not None:
            self.completion.wake()

    def _on_released(self, association_id: str) -> None:
        journal, completion = self.journal, self.completion
        if (
            journal is not None
            and journal.mark_association_released(association_id)
            and completion is not None
        ):
            completion.wake()

    def _wake_workers(self) -> None:
        for worker in self.workers:
            worker.wake()

    def _set_rules(self, rules: RuleSet) -> None:
        with self._rules_lock:
            self._rules = rules
        if self.completion is not None:
            self.completion.rules_reloaded()

    # ------------------------------------------------------------------ building parts

    def _load_catalog(self) -> Any:
        if self.config.model_spec is None:
            return None
        from inference.spec import load_model_spec

        try:
            return load_model_spec(self.config.model_spec)
        except InferenceError as exc:
            raise ConfigError(f"model spec {self.config.model_spec}: {exc}") from exc

    def _check_destinations(self) -> None:
        """C-ECHO the destinations in the background: a slow or absent peer delays nothing."""
        sender = self.sender
        if sender is None or not self.config.destinations:
            return
        thread = threading.Thread(target=sender.check_destinations, name="destination-echo", daemon=True)
        thread.start()
        self._echo_thread = thread

    def _start_http(self) -> None:
        if self.config.http is None:
            return
        from dicom_node.http.server import HttpServer  # fastapi/uvicorn only when configured

        server = HttpServer(self, self.config.http)
        try:
            self.http = server.start()
        except OSError as exc:
            raise NodeError(
                f"cannot listen on {self.config.http.host}:{self.config.http.port}: {exc}"
            ) from exc

    def _start_drop_folder(self, ingestor: Ingestor) -> None:
        watcher = DropFolder(self.storage_dir / "incoming", ingestor, called_ae=self.ae_title)
        watcher.start()
        self._watchers.append(watcher)

    def _start_rules_watcher(self, catalog: Any) -> None:
        if self.config.watched_rules_path is None:
            return
        watcher = watch_config_rules(self.config, self._set_rules, catalog)
        watcher.start()
        self._watchers.append(watcher)
