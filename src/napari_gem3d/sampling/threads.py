"""CPU threads for a generation: as many as the machine has idle cores right now, not as many as it has.

torch's intra-op threads wait for each other at every operation. When another process holds a core (the
napari GUI thread drawing, a second job), a thread that shares that core arrives late at every barrier
and the whole pool waits (benchmarks/bench_interactive.py measures it: all-core threads against this
policy, quiet and beside one busy process). So before a CPU generation
:func:`choose_threads` samples the idle CPU time over a short window (``/proc/stat``) and uses
``round(idle cores)`` threads, at least one, at most the cores this process may run on.

``GEM3D_THREADS=N`` overrides the choice (``0`` or ``auto``: measure). The choice and how it was made
go into the provenance (``cpu_threads``) and ``gem3d info`` prints what it would choose now.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

#: How long the idle CPU time is sampled before a generation (seconds).
SAMPLE_SECONDS = 0.1  # 100 Hz jiffies: 20 per 2 cores, enough to tell a busy core from an idle one
ENV = "GEM3D_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int  # cores this process may use
    idle_cores: float | None  # measured idle cores (None: not measurable here)
    how: str  # "measured" | "env" | "unmeasured"

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


def choose_threads(seconds: float = SAMPLE_SECONDS) -> ThreadChoice:
    """The thread count for a CPU generation starting now (see the module docstring)."""
    cores = usable_cores()
    text = os.environ.get(ENV, "").strip().lower()
    if text not in ("", "0", "auto"):
        try:
            wanted = int(text)
        except ValueError:
            raise ValueError(f"{ENV}={text!r} is not a whole number; set it to a thread count or 'auto'") from None
        if wanted < 1:
            raise ValueError(f"{ENV} must be >= 1 (or 0 / auto to measure), got {wanted}")
        return ThreadChoice(wanted, cores, None, "env")
    idle = idle_cores(seconds)
    if idle is None:
        return ThreadChoice(cores, cores, None, "unmeasured")
    return ThreadChoice(max(1, min(cores, int(round(idle)))), cores, round(idle, 2), "measured")


__all__ = ["ENV", "ThreadChoice", "choose_threads", "idle_cores", "usable_cores"]
