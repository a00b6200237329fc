"""``runner=ray``: extract a video list on a Ray cluster, one extractor per actor.

::

    driver (this process)                       Ray actors: ExtractionWorker, one per GPU
    ---------------------                       (or CPU workers), model built once
    absolute video paths  --exchange(paths)-->  inbox queue
                                                thread: the Driver of a local run
                                                (utils/run/driver.py: precheck ->
                                                extract_many -> atomic write to its sink)
    OutcomeLog (summary, report, bar) <--outcomes--  outbox queue

Only paths and small :class:`~utils.run.driver.VideoOutcome` records travel through
Ray; frames and features stay inside the actor, which writes them exactly as
the single-process run does. So the outputs are the same files with the same
numbers, and a killed run is resumed by running it again: what exists is skipped.

Plain actors with a work queue rather than Ray Data: each video's outcome comes
back on its own (exact report and progress, and no Arrow/pandas dependency),
each actor keeps ``decode_workers + 2`` videos queued so its decoder threads
never wait between videos, and the driver knows which videos a dead worker held.
A worker that dies (killed, out of memory, node lost) is replaced; the videos it
held are retried one at a time, so a video that crashes its worker is reported
failed after its second crash instead of taking other videos down with it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from r21d_features.utils.core.errors import DeviceFailure
from r21d_features.utils.core.object_store import absolute_name, set_storage_options, storage_options
from r21d_features.utils.core.console import plural
from r21d_features.utils.outputs.metadata import METADATA_KEYS
from r21d_features.utils.pipeline.prefetch import default_decode_workers
from r21d_features.utils.run.driver import Driver, VideoOutcome, one_line_reason
from r21d_features.utils.run.runner import OutcomeLog, RunSummary, report_path_in
from r21d_features.utils.run.settings import RaySettings, RaySetupError
from r21d_features.utils.outputs.sinks import make_sink, output_dir

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install ".[ray]"'
# The status of a notice, not an outcome: a video extracted and held back by the actor's sink
# (a Parquet row waiting for its part); its real outcome follows once it is written.
HELD = "held"
# Seconds an exchange call waits for a finished video before returning empty-handed.
EXCHANGE_WAIT_S = 1.0
# A video held by a worker that died this many times is reported failed instead of retried.
MAX_WORKER_DEATHS_PER_VIDEO = 2
_CLOSE = None  # inbox marker: the current session of paths is complete


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`RaySetupError` saying how to install it."""
    try:
        import ray  # noqa: PLC0415 (optional dependency, imported only for runner=ray)
    except ImportError:
        raise RaySetupError(f"runner=ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------- settings and sizing
@dataclass(frozen=True)
class WorkerPlan:
    """How many actors and what each asks Ray for; ``decode_workers`` is threads per actor."""

    num_workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    decode_workers: int

    @property
    def videos_ahead(self) -> int:
        """Videos kept queued on each worker: enough for every decoder thread plus the model."""
        return self.decode_workers + 2


def plan_workers(
    ray_settings: RaySettings,
    nodes_cpus_gpus: Sequence[tuple[float, float]],
    want_gpu: bool,
    decode_workers: int | None = None,
) -> WorkerPlan:
    """Fill the ``None`` settings from the alive nodes' ``(CPUs, GPUs)`` and refuse what cannot fit.

    GPUs per worker: 1 when GPUs are wanted and the cluster has some, else 0.
    Workers: one per GPU slot, or 1 on CPU only. CPUs per worker: the smallest
    per-slot share of a node that can host a worker, so every worker can be placed.
    """
    total_cpus = sum(c for c, _ in nodes_cpus_gpus)
    total_gpus = sum(g for _, g in nodes_cpus_gpus)
    gpus = ray_settings.ray_gpus_per_worker
    if gpus is None:
        gpus = 1.0 if want_gpu and total_gpus > 0 else 0.0
    elif gpus > 0 and total_gpus == 0:
        raise RaySetupError(
            f"ray_gpus_per_worker={gpus} but the Ray cluster has no GPU: set ray_gpus_per_worker=0 for CPU workers"
        )
    num = ray_settings.ray_num_workers
    if num is None:
        num = max(1, int(total_gpus // gpus)) if gpus > 0 else 1
    cpus = ray_settings.ray_cpus_per_worker
    if cpus is None:
        if gpus > 0:
            shares = [c / (g // gpus) for c, g in nodes_cpus_gpus if g >= gpus]
            cpus = float(max(1, math.floor(min(shares))))
        else:
            biggest_node = max((c for c, _ in nodes_cpus_gpus), default=0)
            cpus = float(max(1, math.floor(min(total_cpus / num, biggest_node))))
    if num * gpus > total_gpus + 1e-9:
        raise RaySetupError(
            f"ray_num_workers={num} x ray_gpus_per_worker={gpus:g} needs {num * gpus:g} GPUs but the Ray cluster has "
            f"{total_gpus:g}: lower ray_num_workers or ray_gpus_per_worker"
        )
    if num * cpus > total_cpus + 1e-9:
        raise RaySetupError(
            f"ray_num_workers={num} x ray_cpus_per_worker={cpus:g} needs {num * cpus:g} CPUs but the Ray cluster has "
            f"{total_cpus:g}: lower ray_num_workers or ray_cpus_per_worker"
        )
    # The local default's rule, on this worker's share of CPUs.
    decode = decode_workers or default_decode_workers(int(cpus))
    return WorkerPlan(num_workers=num, gpus_per_worker=gpus, cpus_per_worker=cpus, decode_workers=decode)


def check_ray_run(on_extraction: str, show_pred: bool, save_plots: bool = False) -> None:
    """Refuse what only makes sense in one process: printed features or predictions, pictures."""
    if on_extraction == "print":
        raise RaySetupError(
            "runner=ray saves features to files: set on_extraction=save_numpy, save_pickle, save_hdf5 or save_parquet "
            "(on_extraction=print needs runner=local)"
        )
    if show_pred:
        raise RaySetupError("show_pred=true prints predictions and needs runner=local: drop show_pred for runner=ray")
    if save_plots:
        raise RaySetupError("save_plots=true draws pictures for a look at a few videos and needs runner=local: "
                            "drop save_plots for runner=ray")


# ---------------------------------------------------------------------- inside each actor
class ExtractionWorker:
    """What one Ray actor runs: an extractor built once, fed paths through a queue.

    A plain class (Ray wraps it with ``ray.remote``), so it also runs without Ray.
    ``exchange(paths, close)`` queues absolute paths and returns the outcomes
    finished since the last call. A background thread runs "sessions": each is one
    ``extract_many`` over the queued paths up to a close marker, so the decoder
    threads work ahead across videos within a session.
    """

    def __init__(
        self,
        extractor_cls: Any,
        extractor_settings: Any,
        on_extraction: str,
        output_path: str,
        debug: bool = False,
        num_threads: int | None = None,
        with_metadata: bool = False,
        video_root: str | None = None,
        store_options: dict | None = None,
    ) -> None:
        set_storage_options(store_options)  # the driver's storage_options (s3://, gs://, az:// inputs)
        if num_threads is not None:
            # The worker's CPU share, whatever Ray puts in OMP_NUM_THREADS: float32 sums
            # over another number of threads round differently.
            torch.set_num_threads(num_threads)
        self.setup_error: str | None = None
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._fatal: BaseException | None = None
        self._stopping = False
        self._t_last = time.perf_counter()  # when the previous video of the current session finished
        self._held: list[VideoOutcome] = []  # done, but held back by the sink: sent once written
        self.host = socket.gethostname()
        try:
            self.extractor = extractor_cls(extractor_settings)
            # Each actor its own sink: with save_hdf5 / save_parquet its own part files (one writer per file).
            self.sink = make_sink(on_extraction, output_path, self.extractor.feature_type, self.extractor.model_name,
                                  self.extractor.feature_shape, sys.stdout,
                                  METADATA_KEYS if with_metadata else (), video_root, self.extractor.output_attrs)
            # Saved outputs carry their provenance (utils/outputs/provenance.py).
            self.sink = self.sink.with_provenance(self.extractor.provenance())
            self.driver = Driver(self.extractor, self.sink, debug=debug, with_metadata=with_metadata)
        except Exception as exc:  # bad settings, missing weights: reported by ready(), not as a crash
            self.setup_error = one_line_reason(exc)
            return
        threading.Thread(target=self._run, name="extract", daemon=True).start()

    def ready(self) -> dict[str, Any]:
        """``{"error": one line or None, "pid", "model_name", "feature_type", "device"}``."""
        if self.setup_error is not None:
            return {"error": self.setup_error, "pid": os.getpid()}
        return {
            "error": None,
            "pid": os.getpid(),
            "model_name": self.extractor.model_name,
            "feature_type": self.extractor.feature_type,
            "device": str(self.extractor.device),
        }

    def exchange(self, video_paths: Sequence[str], close: bool, wait_s: float = EXCHANGE_WAIT_S) -> list[VideoOutcome]:
        """Queue ``video_paths`` (then end the session if ``close``); wait up to ``wait_s`` for
        at least one finished video and return every outcome finished so far."""
        for path in video_paths:
            self._inbox.put(path)
        if close:
            self._inbox.put(_CLOSE)
        outcomes = []
        try:
            outcomes.append(self._outbox.get(timeout=wait_s))
            while True:
                outcomes.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        if self._fatal is not None and not outcomes:
            if isinstance(self._fatal, DeviceFailure):  # the driver stops the run with this line
                raise self._fatal
            raise RuntimeError(f"extraction thread stopped: {one_line_reason(self._fatal)}") from self._fatal
        return outcomes

    def stop(self) -> None:
        """End the background thread once the queued paths are done (Ray just kills the actor)."""
        self._stopping = True
        self._inbox.put(_CLOSE)

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._run_session()
        except BaseException as exc:  # a bug, not a video: exchange() raises it, the driver replaces this worker
            self._fatal = exc

    def _run_session(self) -> None:
        try:
            self.driver.run(self.driver.admitted(self._queued_paths(), self._send_back), self._finished)
        finally:
            self._close_sink()

    def _close_sink(self) -> None:
        """End of a session: write what the sink holds back, then send those videos' outcomes
        (the driver ends the run, and kills this actor, once every outcome is back)."""
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001 (those videos fail; the next run extracts them again)
            reason = f"cannot save output: {one_line_reason(exc)}"
            for outcome in self._held:
                outcome.status, outcome.reason = "failed", reason
        held, self._held = self._held, []
        for outcome in held:
            self._send_back(outcome)

    def _queued_paths(self):  # noqa: ANN202 (generator of str)
        for index, path in enumerate(iter(self._inbox.get, _CLOSE)):
            if index == 0:  # seconds count from here, not from the idle wait for work
                self._t_last = time.perf_counter()
            yield path

    def _finished(self, outcome: VideoOutcome) -> None:
        """An extracted video's outcome (the writer thread): timed, then sent back once its output
        is on disk (a video the sink holds back, a Parquet row, waits for its part)."""
        now = time.perf_counter()
        outcome.seconds, self._t_last = round(now - self._t_last, 3), now
        pending = set(self.sink.pending()) if outcome.status == "done" or self._held else set()
        if outcome.status == "done" and outcome.path in pending:
            self._held.append(outcome)
            self._send_back(VideoOutcome(outcome.path, HELD))  # the driver sends more work meanwhile
        else:
            self._send_back(outcome)
        written = [o for o in self._held if o.path not in pending]
        if written:
            self._held = [o for o in self._held if o.path in pending]
            for held in written:
                self._send_back(held)

    def _send_back(self, outcome: VideoOutcome) -> None:
        outcome.host, outcome.pid = self.host, os.getpid()
        self._outbox.put(outcome)


# ---------------------------------------------------------------------- driver side
@dataclass
class _Slot:
    """One worker position in the pool; its actor is replaced when it dies."""

    index: int
    actor: Any = None
    ref: Any = None  # the ObjectRef of the call in flight (ready or exchange)
    started: bool = False
    pid: int | None = None
    outstanding: list[str] = field(default_factory=list)  # absolute paths sent, not yet reported
    held: set[str] = field(default_factory=set)  # of those, extracted and held back by the sink (not yet written)
    closed: bool = True  # no path was sent since the last close marker
    isolating: bool = False  # holds one retried video alone


class _RayRun:
    """The driver loop: hands paths to workers, collects outcomes, replaces dead workers."""

    def __init__(self, ray: Any, plan: WorkerPlan, worker_args: tuple, video_paths: Sequence[str],
                 report_path: Path, progress: bool) -> None:
        self.ray = ray
        self.plan = plan
        self.worker_args = worker_args
        self.given = {absolute_name(p): p for p in video_paths}
        self.order = {p: i for i, p in enumerate(video_paths)}
        self.fresh: deque[str] = deque(self.given)
        self.retries: deque[str] = deque()
        self.deaths: Counter[str] = Counter()
        self.report_path = report_path
        self.log = OutcomeLog(len(self.given), report_path, progress)
        self.startup_deaths = 0
        self.any_ready = False
        remote_cls = ray.remote(ExtractionWorker).options(
            num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker, max_restarts=0, max_task_retries=0,
        )
        self.remote_cls = remote_cls
        self.slots = [_Slot(index=i) for i in range(plan.num_workers)]

    # -------------------------------------------------------------- lifecycle
    def run(self) -> tuple[RunSummary, Path | None]:
        for slot in self.slots:
            self._start(slot)
        try:
            while self.fresh or self.retries or any(s.outstanding for s in self.slots):
                by_ref = {s.ref: s for s in self.slots if s.ref is not None}
                ready_refs, _ = self.ray.wait(list(by_ref), num_returns=1)
                for ref in ready_refs:
                    self._handle(by_ref[ref], ref)
        finally:
            self.log.close()
            for slot in self.slots:
                if slot.actor is not None:
                    self.ray.kill(slot.actor)
        outcomes = sorted(self.log.summary.outcomes, key=lambda o: self.order.get(o.path, len(self.order)))
        return RunSummary(outcomes=outcomes), self.report_path

    def _start(self, slot: _Slot) -> None:
        slot.actor = self.remote_cls.remote(*self.worker_args)
        slot.ref = slot.actor.ready.remote()
        slot.started, slot.pid, slot.outstanding, slot.closed, slot.isolating = False, None, [], True, False
        slot.held = set()

    def _handle(self, slot: _Slot, ref: Any) -> None:
        try:
            value = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.RayTaskError) as exc:
            if isinstance(getattr(exc, "cause", None), DeviceFailure):
                raise exc.cause from None  # a broken GPU: stop the run, do not retry on it
            self._worker_died(slot, exc)
            return
        if not slot.started:
            if value["error"] is not None:
                raise RaySetupError(f"a Ray worker could not build the extractor: {value['error']}")
            slot.started, slot.pid = True, value["pid"]
            log.info("Ray worker %d ready (pid %s, %s)", slot.index, value["pid"], value["device"])
            if not self.any_ready:
                self.any_ready = True
                self.log.restart_clock()
        else:
            for outcome in value:
                self._record(slot, outcome)
        self._send(slot)

    # -------------------------------------------------------------- work distribution
    def _send(self, slot: _Slot) -> None:
        new: list[str] = []
        close = False
        if slot.isolating:
            pass  # wait for the retried video alone
        elif self.fresh:
            while self.fresh and len(slot.outstanding) - len(slot.held) + len(new) < self.plan.videos_ahead:
                new.append(self.fresh.popleft())
            close = not self.fresh  # the last paths: let the session finish instead of waiting for more
        elif self.retries and not slot.outstanding:
            new, close, slot.isolating = [self.retries.popleft()], True, True
        elif slot.outstanding and not slot.closed:
            close = True
        if new:
            slot.closed = False
        if close:
            slot.closed = True
        slot.outstanding.extend(new)
        slot.ref = slot.actor.exchange.remote(new, close, EXCHANGE_WAIT_S)

    def _record(self, slot: _Slot, outcome: VideoOutcome) -> None:
        if outcome.status == HELD:  # its outcome comes once the sink wrote it; a death retries it
            slot.held.add(outcome.path)
            return
        slot.held.discard(outcome.path)
        if outcome.path in slot.outstanding:
            slot.outstanding.remove(outcome.path)
        if not slot.outstanding:
            slot.isolating = False
        self._add(outcome)

    def _add(self, outcome: VideoOutcome) -> None:
        outcome.path = self.given.get(outcome.path, outcome.path)
        self.log.add(outcome, workers=sum(s.started for s in self.slots))

    def _worker_died(self, slot: _Slot, exc: BaseException) -> None:
        reason = death_reason(exc)
        try:
            self.ray.kill(slot.actor)  # a RayTaskError leaves the actor alive
        except Exception:  # noqa: BLE001 (already gone)
            pass
        if not slot.started:
            self.startup_deaths += 1
            if self.startup_deaths > self.plan.num_workers:
                raise RaySetupError(f"Ray workers keep dying while starting: {reason}")
        held = list(slot.outstanding)
        log.warning("Ray worker %d (pid %s) died: %s; %s will be retried one at a time",
                    slot.index, slot.pid, reason, plural(len(held), "unfinished video"))
        for path in held:
            self.deaths[path] += 1
            if self.deaths[path] >= MAX_WORKER_DEATHS_PER_VIDEO:
                self._add(VideoOutcome(path=path, status="failed", reason=(
                    f"its Ray worker died {self.deaths[path]} times while extracting it (last: {reason})")))
            else:
                self.retries.append(path)
        if self.fresh or self.retries:
            self._start(slot)
        else:  # nothing left for a new worker to do
            slot.actor = slot.ref = None
            slot.started, slot.outstanding, slot.held = False, [], set()


def death_reason(exc: BaseException) -> str:
    """A short line for a dead worker: Ray's first sentence, or the error of a crashed thread."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return one_line_reason(cause)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return " ".join(first.split()).rstrip(".")


TOKEN_HINT = ("if the cluster uses token authentication (`RAY_AUTH_MODE=token ray start --head`), give this "
              "driver its token: RAY_AUTH_TOKEN=<token>, RAY_AUTH_TOKEN_PATH=<file>, or the file ~/.ray/auth_token")


def use_cluster_token(address: str | None, environ: dict = os.environ) -> bool:  # noqa: B006 (the process env)
    """Joining a cluster (``address`` set) with a token at hand: turn on Ray's token mode for this driver.

    A cluster started with ``RAY_AUTH_MODE=token ray start --head`` (the default of newer Ray)
    refuses a driver that does not send the token, and Ray's driver only sends one in token
    mode; it reads the token from ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``, or
    ``~/.ray/auth_token``. An explicit ``RAY_AUTH_MODE`` is left alone. Returns True when enabled;
    an already imported Ray must then reload its config (see :func:`run_on_ray`).
    """
    if address is None or "RAY_AUTH_MODE" in environ:
        return False
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    has_token = bool(environ.get("RAY_AUTH_TOKEN")) or (Path(path).is_file() if path else
                                                        (Path.home() / ".ray" / "auth_token").is_file())
    if has_token:
        environ["RAY_AUTH_MODE"] = "token"
    return has_token


def run_on_ray(
    video_paths: Sequence[str],
    extractor_cls: Any,
    extractor_settings: Any,
    *,
    on_extraction: str = "save_numpy",
    output_path: str = "./output",
    ray_settings: RaySettings = RaySettings(),
    debug: bool = False,
    progress: bool = True,
    with_metadata: bool = False,
    save_plots: bool = False,
    video_root: str | None = None,
) -> tuple[RunSummary, Path | None]:
    """Extract ``video_paths`` on Ray workers into files; the summary and the run report's path.

    Each worker builds ``extractor_cls(extractor_settings)`` once (``extractor_cls``
    is a class Ray can import by name, with a ``feature_type``; the settings a frozen dataclass
    with ``model_name``, ``device``, ``decode_workers``, ``show_pred``, ``tmp_path`` and
    ``checkpoint_path``, as :class:`~utils.core.settings.ExtractorSettings` says).
    Joins the Ray runtime already initialised in this process, else
    ``ray.init(address=ray_settings.ray_address)`` (None: a new local cluster,
    ``"auto"``: the cluster started by ``ray start``) and shuts down what it started.
    Inputs, ``output_path`` and ``tmp_path`` must be at the same paths on every node.
    Raises :class:`RaySetupError` before any video is touched when the run cannot work.
    """
    check_ray_run(on_extraction, extractor_settings.show_pred, save_plots)
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        token_mode = use_cluster_token(ray_settings.ray_address)
        if token_mode:
            # Ray reads RAY_AUTH_MODE into its config once, when imported: reload it (as Ray does when
            # it turns token mode on itself), or this driver would not send the token and be refused.
            ray._raylet.Config.initialize("")
        try:
            ray.init(address=ray_settings.ray_address, logging_level=logging.DEBUG if debug else logging.WARNING)
        except (ConnectionError, SystemExit, ray.exceptions.AuthenticationError) as exc:
            # Ray exits when the GCS at the address never answers.
            hint = (TOKEN_HINT if not token_mode or isinstance(exc, ray.exceptions.AuthenticationError)
                    else "the token found was refused: check it is the cluster's")
            raise RaySetupError(
                f"ray_address={ray_settings.ray_address!r}: cannot connect to a Ray cluster ({death_reason(exc)}); "
                f"is `ray start --head` running there? {hint}; or set ray_address=null for a local one"
            ) from None
    try:
        nodes = [
            (float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")
        ]
        device = str(extractor_settings.device)
        want_gpu = device.startswith("cuda")
        plan = plan_workers(ray_settings, nodes, want_gpu, extractor_settings.decode_workers)
        if want_gpu and plan.gpus_per_worker == 0:
            log.warning("device=%s asked for but the Ray workers have no GPU: they run on cpu", device)
        log.info("Ray: %s, %g GPU and %g CPU each, %s each", plural(plan.num_workers, "worker"),
                 plan.gpus_per_worker, plan.cpus_per_worker, plural(plan.decode_workers, "decode thread"))
        worker_settings = dataclasses.replace(
            extractor_settings,
            # Ray shows each GPU actor only its own GPU(s), as cuda:0.
            device="cuda:0" if plan.gpus_per_worker > 0 else "cpu",
            decode_workers=plan.decode_workers,
            # Workers may run in another directory.
            tmp_path=os.path.abspath(extractor_settings.tmp_path),
            checkpoint_path=(None if extractor_settings.checkpoint_path is None
                             else os.path.abspath(extractor_settings.checkpoint_path)),
        )
        worker_args = (extractor_cls, worker_settings, on_extraction, absolute_name(output_path), debug,
                       max(1, int(plan.cpus_per_worker)), with_metadata,
                       None if video_root is None else absolute_name(video_root), storage_options())
        report_path = report_path_in(output_dir(output_path, extractor_cls.feature_type, extractor_settings.model_name))
        return _RayRun(ray, plan, worker_args, video_paths, report_path, progress).run()
    finally:
        if started_here:
            ray.shutdown()
