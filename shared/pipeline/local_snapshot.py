"""The CLI's initial sync: plan, then run partitions in a local process pool with progress."""

from __future__ import annotations

import functools
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, TextIO

from shared.config import Settings, load_settings
from shared.errors import MirrorError, describe_error
from shared.landing_zone.tables import TableRef
from shared.logs import configure_logging
from shared.pipeline.plans import Phase, TablePlan, load_plan
from shared.pipeline.snapshot import (
    PARTITION_KIND,
    PartitionResult,
    PartitionTask,
    mark_failed,
    pending_tasks,
    plan_selected,
    run_partition,
)
from shared.pipeline.wiring import MirrorContext, open_context

REFRESH_SECONDS = 1.0
LOG_REFRESH_SECONDS = 10.0  # when output is not a terminal, a line per table this often
SettingValues = tuple[tuple[str, str], ...]  # hashable settings, sent to every worker task


@dataclass(frozen=True)
class SnapshotSummary:
    tables: list[TablePlan]
    documents: int
    files: int
    seconds: float
    peak_worker_mb: float  # the largest resident set any worker reached
    stopped: bool = False  # stopped by request before every table was streaming; resumable


def run_local_snapshot(
    settings: Settings, out: TextIO = sys.stderr, stop: threading.Event | None = None
) -> SnapshotSummary:
    """Snapshot every selected collection; returns when all of them are streaming, or, once
    ``stop`` is set, when the workers have stopped at a safe point (``stopped``: resumable)."""
    stop = stop or threading.Event()
    started = time.monotonic()
    ctx = open_context(settings, select_sources=True)
    try:
        selection = plan_selected(ctx)
        plans = selection.plans
        tasks = pending_tasks(plans)
        results: list[tuple[PartitionResult, float]] = []
        if tasks:
            with SnapshotPool(ctx, settings, len(tasks)) as pool:
                progress = ProgressDisplay(ctx, plans, out, pool.documents_read)
                pool.submit(tasks)
                while pool.busy:
                    if stop.is_set():
                        pool.stop()
                    results += pool.wait(REFRESH_SECONDS)
                    progress.show()
                progress.show(final=True)
                pool.raise_failures()
        final = [load_plan(ctx.state, plan.table) or plan for plan in plans]
    finally:
        ctx.close()
    if selection.stopped:
        raise MirrorError(
            "stopped before publishing anything:\n  " + "\n  ".join(selection.stopped.values())
        )
    unfinished = [str(plan.table) for plan in final if plan.phase != Phase.STREAMING]
    if unfinished and not stop.is_set():
        raise MirrorError(f"snapshot incomplete for {', '.join(unfinished)}; run again to resume")
    return SnapshotSummary(
        final,
        sum(result.documents for result, _ in results),
        sum(result.files for result, _ in results),
        time.monotonic() - started,
        max((peak for _, peak in results), default=0.0),
        stopped=bool(unfinished),
    )


class SnapshotPool:
    """Partitions running in local worker processes, polled without blocking the caller (the
    `run` command reads change windows meanwhile). Each result comes with its worker's peak
    memory (MB); failures are collected per partition, the others carry on.

    Stopping is the parent's decision: workers ignore SIGINT and SIGTERM, which reach them too
    as members of the command's process group (`systemctl stop`, Ctrl-C), and stop after the
    piece in hand once ``stop()`` is called, so a requested stop is never a dead worker.
    """

    def __init__(self, ctx: MirrorContext, settings: Settings, expected_tasks: int) -> None:
        self._ctx = ctx
        self._settings: SettingValues = tuple(sorted(settings.values.items()))
        processes = get_context("spawn")
        self._stop = processes.Event()  # shared by inheritance, as multiprocessing requires
        workers = max(1, min(settings.workers, expected_tasks))
        # Documents read by each worker's current partition, as (task number, count) pairs in
        # shared memory: progress between the partition's files without a state write per batch.
        self._read = processes.Array("q", 2 * workers)
        self._slots = processes.Value("i", 0)  # the next worker's pair
        # spawn, not fork: each worker opens its own MongoDB client, SQLite handle, SDK clients.
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=processes,
            initializer=_start_worker,
            initargs=(self._stop, self._read, self._slots),
        )
        self._running: dict[Future[tuple[PartitionResult, float]], PartitionTask] = {}
        self._numbers: dict[Future[tuple[PartitionResult, float]], int] = {}
        self._submitted = 0
        self.failures: list[str] = []
        self.stopped: list[PartitionTask] = []  # stopped by request, to resume on a later run
        self._workers: dict[int, BaseProcess] = {}

    def __enter__(self) -> SnapshotPool:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc: object) -> None:
        self.close(wait=error_type is None)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def running(self) -> set[PartitionTask]:
        return set(self._running.values())

    def submit(self, tasks: list[PartitionTask]) -> None:
        # The pool starts its workers in this thread, on the first submit. A stop signal that
        # came before a worker's initializer ignores it would kill the worker (a broken pool):
        # blocked here, the signals stay blocked in the worker (fork and exec keep the mask)
        # until its initializer has ignored them, and reach this process once unblocked.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for task in tasks:
                self._submitted += 1  # numbered from 1: 0 in a pair means no partition yet
                future = self._pool.submit(_run_in_worker, self._settings, task, self._submitted)
                self._running[future] = task
                self._numbers[future] = self._submitted
            # The process table, for close(wait=False) (Python 3.14 has kill_workers()).
            self._workers.update(self._pool._processes or {})
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def stop(self) -> None:
        """Ask every partition to stop at its next safe point; those not started yet never
        start. ``wait`` then returns them as they stop (``stopped``)."""
        self._stop.set()
        for future, task in list(self._running.items()):
            if future.cancel():  # still queued here: no worker has it
                del self._running[future]
                del self._numbers[future]
                self.stopped.append(task)

    def wait(self, timeout: float) -> list[tuple[PartitionResult, float]]:
        """Results of the partitions that finished within ``timeout`` seconds."""
        if not self._running:
            return []
        done, _ = wait(self._running, timeout=timeout, return_when=FIRST_COMPLETED)
        results = []
        for future in done:
            task = self._running.pop(future)
            del self._numbers[future]
            try:
                result = future.result()
                if result[0].stopped:
                    self.stopped.append(task)
                results.append(result)
            except BrokenProcessPool:
                self.failures.append(f"{task.table} partition {task.index}: a worker process died")
            except Exception as error:  # reported per partition; the others carry on
                reason = describe_error(error)
                self.failures.append(f"{task.table} partition {task.index}: {reason}")
                mark_failed(self._ctx, task, reason)
        return results

    def documents_read(self) -> dict[PartitionTask, int]:
        """Documents read so far by each running partition, published ones included."""
        with self._read.get_lock():
            pairs: list[int] = self._read[:]
        running = {number: self._running[future] for future, number in self._numbers.items()}
        read: dict[PartitionTask, int] = {}
        for number, documents in zip(pairs[::2], pairs[1::2], strict=True):
            if number in running:  # a finished partition's last count is in state already
                read[running[number]] = documents
        return read

    def raise_failures(self) -> None:
        if self.failures:
            raise MirrorError(
                "snapshot partitions failed (run again to resume):\n  " + "\n  ".join(self.failures)
            )

    def close(self, wait: bool = True) -> None:
        """Stop taking partitions; ``wait=False`` kills the running ones, to resume on a later run.

        Killing is safe: a partition's publishes are fenced and numbered in the state store, so
        a later run repairs any publish cut short and resumes after the last published `_id`.
        Left running, a worker would keep a failed or stopped command alive until its partition
        ends (hours on a big collection): the interpreter waits for pool processes at exit.
        """
        if not wait:
            # Killed, not terminated: workers ignore SIGTERM (the class docstring). First: a
            # broken pool's manager joins its workers holding the lock shutdown() takes.
            for worker in self._workers.values():
                worker.kill()
        self._pool.shutdown(wait=wait, cancel_futures=True)


STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
_stop_requested: ProcessEvent | None = None  # the pool's stop event, in a worker process
_read: Any = None  # the pool's shared (task number, documents read) pairs, in a worker process
_slot = -1  # this worker's pair in _read


def _start_worker(stop: ProcessEvent, read: Any, slots: Any) -> None:
    """A worker's first step: stop signals are its parent's to act on (see SnapshotPool)."""
    global _stop_requested, _read, _slot
    _stop_requested = stop
    with slots.get_lock():
        _slot = slots.value
        slots.value += 1
    if _slot < len(read) // 2:  # a pool never starts more workers than it was sized for
        _read = read
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _stopping() -> bool:
    return _stop_requested is not None and _stop_requested.is_set()


@functools.cache
def _worker_context(values: SettingValues) -> MirrorContext:
    """The worker process's own context, opened by its first task and kept for the rest (the
    process ends with the pool). A failure to open it fails that task with its cause, and the
    next task tries again."""
    settings = load_settings(dict(values))
    configure_logging(settings.log_level, "%(processName)s")
    return open_context(settings)


def _run_in_worker(
    values: SettingValues, task: PartitionTask, number: int
) -> tuple[PartitionResult, float]:
    def report(documents: int) -> None:
        with _read.get_lock():  # the pair is read together by the parent
            _read[2 * _slot] = number
            _read[2 * _slot + 1] = documents

    result = run_partition(
        _worker_context(values), task, _stopping, report if _read is not None else None
    )
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ProgressDisplay:
    """One line per table: documents done / estimated, docs/s and ETA. Done is, per partition,
    the larger of what state records as published and what its worker has read (``read``):
    files are published only every FILE_ROWS documents, reads show progress in between."""

    def __init__(
        self,
        ctx: MirrorContext,
        plans: list[TablePlan],
        out: TextIO,
        read: Callable[[], dict[PartitionTask, int]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._plans = {plan.table.folder: plan for plan in plans}
        self._out = out
        self._read = read
        self._started = time.monotonic()
        self._tty = out.isatty()
        self._last_shown = float("-inf")
        # Published by an earlier run: not this run's rate.
        self._before = {folder: count for folder, (count, _) in self._published().items()}
        self._finished_at: dict[str, float] = {}

    def _published(self) -> dict[str, tuple[int, dict[int, int]]]:
        """Per table: documents its finished partitions published, and the others' counts."""
        tables: dict[str, tuple[int, dict[int, int]]] = {f: (0, {}) for f in self._plans}
        for key, record in self._ctx.state.list(PARTITION_KIND):
            folder, index = key.rsplit("#", 1)
            if folder in tables:
                documents = int(record.value.get("documents", 0))
                done, open_ = tables[folder]
                if record.value.get("status") == "done":
                    tables[folder] = (done + documents, open_)
                else:
                    open_[int(index)] = documents
        return tables

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not (final or self._tty or now - self._last_shown >= LOG_REFRESH_SECONDS):
            return
        self._last_shown = now
        read = self._read() if self._read is not None else {}
        lines = []
        for folder, (done, partitions) in self._published().items():
            plan = self._plans[folder]
            for task, documents in read.items():
                if task.table.folder == folder and task.index in partitions:
                    partitions[task.index] = max(partitions[task.index], documents)
            count = done + sum(partitions.values())
            finished = folder in self._finished_at or (not partitions and self._all_done(plan))
            if finished:
                self._finished_at.setdefault(folder, now)
            elapsed = max(self._finished_at.get(folder, now) - self._started, 1e-6)
            rate = (count - self._before.get(folder, 0)) / elapsed
            lines.append(self._line(plan.table, plan, count, rate, finished))
        if self._tty and not final:
            self._out.write("\r" + " | ".join(lines) + "\x1b[K")
        else:
            self._out.write(("\n" if self._tty else "") + "\n".join(lines) + "\n")
        self._out.flush()

    def _all_done(self, plan: TablePlan) -> bool:
        current = load_plan(self._ctx.state, plan.table)
        return current is not None and current.phase != Phase.SNAPSHOTTING

    @staticmethod
    def _line(table: TableRef, plan: TablePlan, count: int, rate: float, finished: bool) -> str:
        total = count if finished else max(plan.estimated_documents, count)
        percent = 100.0 * count / total if total else 100.0
        shown = f"{table}: {count:,}/{total:,} docs ({percent:.0f}%)"
        rate_text = _rate(rate)
        if finished:  # its average rate over this run, or nothing (read before, or too few)
            return f"{shown} done" + (f", {rate_text} docs/s" if rate_text else "")
        eta_text = f"{(total - count) / rate:.0f}s" if rate_text else "?"
        return f"{shown} {rate_text or NO_RATE} docs/s ETA {eta_text}"


NO_RATE = "\u2013"  # an en dash: no rate yet ("0 docs/s" would say the table is stuck)


def _rate(rate: float) -> str | None:
    """Documents per second as shown, or None while it would show as 0."""
    text = f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"
    return None if float(text.replace(",", "")) <= 0 else text
