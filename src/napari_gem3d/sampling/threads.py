"""CPU threads for a generation: as many as the machine has idle cores right now, not as many as it has.

torch's intra-op threads wait for each other at every operation. When another process holds a core (the
napari GUI thread drawing, a second job), a thread that shares that core arrives late at every barrier
and the whole pool waits (benchmarks/bench_interactive.py measures it: all-core threads against this
policy, quiet and beside one busy process). So before a CPU generation
:func:`choose_threads` samples the idle CPU time over a short window (``/proc/stat``) and uses
``round(idle cores)`` threads, at least one, at most the cores this process may run on.

When at most one core is idle (so the policy would run one thread), that thread gets one share of the CPU:
the scheduler splits the cores between runnable threads, not processes. The generation then runs its
independent jobs side by side on one single-threaded **worker** per core, and each worker is a runnable
thread with a share of its own: the up and down windows of a round, the halves of a decode, and each
round's decode in the background while the next round denoises (:meth:`Workers.submit`). The workers meet
once per job instead of at every operation. They run the same operations on the same slices as one thread
would; only the batch sizes differ, for which the CPU backend may pick another kernel, so a result equals a
one-thread run's to float rounding (1.7e-6 at most on the demo, where one thread against two already differ
by 3e-4).

``GEM3D_THREADS=N`` overrides the thread count (``0`` or ``auto``: measure) and ``GEM3D_WORKERS=N`` the
workers (a given thread count means one worker unless it is set too). The choice and how it was made go
into the provenance (``cpu_threads``) and ``gem3d info`` prints what it would choose now.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TypeVar

#: How long the idle CPU time is sampled before a generation (seconds).
#: 0.05 s told 0, 1 and 3 spinning processes apart on 2 cores in 60 of 60 samples each (idle read 1.82-2.00,
#: 0.80-1.11, 0.00; 0.1 s: 1.90-2.00, 0.95-1.05, 0.00), and costs 5 % of a 1 s Fast generation instead of 10 %
#: (docs/benchmarks.md). A fully idle or fully busy core is counted exactly whatever the tick quantisation.
SAMPLE_SECONDS = 0.05
ENV = "GEM3D_THREADS"
WORKERS_ENV = "GEM3D_WORKERS"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int  # cores this process may use
    idle_cores: float | None  # measured idle cores (None: not measurable here)
    how: str  # "measured" | "env" | "unmeasured" | "options"
    workers: int = 1  # independent jobs run side by side, each on ``threads`` torch threads

    def to_dict(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle + iowait jiffies, total jiffies) over all CPUs, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    return values[3] + (values[4] if len(values) > 4 else 0), sum(values[:8])


def idle_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Idle CPUs over the next ``seconds`` (e.g. 1.0 on a 2-core machine with one core busy)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(seconds)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    share = (second[0] - first[0]) / (second[1] - first[1])
    return share * (os.cpu_count() or 1)


def _env_count(name: str) -> int | None:
    """A count >= 1 from the environment variable ``name``; None when unset, empty, 0 or auto."""
    text = os.environ.get(name, "").strip().lower()
    if text in ("", "0", "auto"):
        return None
    try:
        wanted = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number; set it to a count or 'auto'") from None
    if wanted < 1:
        raise ValueError(f"{name} must be >= 1 (or 0 / auto to measure), got {wanted}")
    return wanted


def choose_threads(seconds: float = SAMPLE_SECONDS) -> ThreadChoice:
    """The thread count (and workers) for a CPU generation starting now (see the module docstring)."""
    cores = usable_cores()
    threads, workers = _env_count(ENV), _env_count(WORKERS_ENV)
    if threads is not None:
        return ThreadChoice(threads, cores, None, "env", workers or 1)
    idle = idle_cores(seconds)
    if idle is None:
        return ThreadChoice(cores, cores, None, "unmeasured", workers or 1)
    idle_whole = min(cores, int(round(idle)))
    if workers is None:
        workers = cores if idle_whole <= 1 else 1  # one thread's share at most: one worker per core (docstring)
        how = "measured"
    else:
        how = "measured, env workers"
    return ThreadChoice(max(1, idle_whole), cores, round(idle, 2), how, workers)


class Workers:
    """Run a generation's independent jobs side by side on ``count`` threads, each with ``threads`` torch
    threads; with one worker, in the calling thread. torch's grad mode and autocast are per thread: a job
    sets what it needs itself."""

    def __init__(self, count: int = 1, threads: int = 1):
        self.count = count
        self._pool = self._background = None
        if count > 1:
            import torch

            self._pool = ThreadPoolExecutor(count, thread_name_prefix="gem3d-worker",
                                            initializer=torch.set_num_threads, initargs=(threads,))
            self._background = ThreadPoolExecutor(1, thread_name_prefix="gem3d-background",
                                                  initializer=torch.set_num_threads, initargs=(threads,))

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, the items side by side when there are workers."""
        if self._pool is None or len(items) < 2:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))

    def submit(self, fn: Callable[..., R], *args) -> Future:
        """``fn(*args)`` in the background, beside the jobs of :meth:`map`, returning its future (run here at once
        when there are no workers)."""
        if self._background is not None:
            return self._background.submit(fn, *args)
        done: Future = Future()
        done.set_result(fn(*args))
        return done

    def parts(self, n: int) -> list[slice]:
        """``range(n)`` cut into at most ``count`` contiguous, nearly equal slices (one per worker)."""
        if n < 2:
            return [slice(0, n)]
        size = -(-n // min(self.count, n))
        return [slice(a, min(n, a + size)) for a in range(0, n, size)]

    def close(self) -> None:
        for pool in (self._pool, self._background):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._background = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ENV", "WORKERS_ENV", "ThreadChoice", "Workers", "choose_threads", "idle_cores", "usable_cores"]
