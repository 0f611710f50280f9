"""Background jobs: a library generator driven by a napari ``GeneratorWorker``.

Threading contract (ARCHITECTURE.md wall 4): the generator runs on a worker thread and never sees a
layer or a widget; it gets frozen inputs and a :class:`CancelToken`. The handlers given to :class:`Job`
run on the GUI thread (Qt queued signals) and are the only place layers change. A handler that raises
is reported with ``show_error`` and never propagates into Qt.

Cancel = ``CancelToken.cancel()`` (the sampler checks it between denoising steps, so it stops within
one step) **and** ``worker.quit()`` (stops at the next yield). When the worker finishes, an unfinished
generator is closed on the GUI thread so its ``finally`` (device memory release) runs now, not at
garbage collection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ..sampling.cancel import Cancelled, CancelToken


class _GcHold:
    """Keeps Python's full garbage collections off the objects that existed when background work began.

    With napari, torch and scipy loaded a full collection walks ~0.5 M objects, about 0.2 s with the
    interpreter lock held: a visible freeze, on whichever thread allocates. While a worker runs (model
    loading, sampling), :func:`gc.freeze` moves the existing objects out of the collector's sight (an O(1)
    list move), so collections walk only what the work allocates; when the last worker ends,
    :func:`gc.unfreeze` hands them back and nothing that became garbage meanwhile is kept for longer.
    """

    holders = 0

    @classmethod
    def take(cls) -> None:
        import gc

        cls.holders += 1
        gc.freeze()

    @classmethod
    def release(cls) -> None:
        import gc

        cls.holders = max(0, cls.holders - 1)
        if cls.holders == 0:
            gc.unfreeze()


def hold_gc_while(worker) -> None:
    """:class:`_GcHold` from now until ``worker`` finishes (a napari/superqt worker, started or not)."""
    _GcHold.take()
    worker.finished.connect(_GcHold.release)


class JobToken(CancelToken):
    """A cancel token that also honours napari's own cancel (``worker.quit()`` from the task list)."""

    worker: Any = None

    def check(self) -> None:
        worker = self.worker
        if worker is not None and getattr(worker, "abort_requested", False):
            self.cancel()
        super().check()


class JobError(Exception):
    """A worker failure, re-raised so napari reports it: superqt silently drops RuntimeErrors (it takes
    them for a deleted worker and emits neither ``errored`` nor ``finished``), and torch raises
    RuntimeError for most failures (CUDA out of memory included). The original is ``__cause__``."""


def guarded(generator: Generator) -> Generator:
    """Drive ``generator``, turning RuntimeError into :class:`JobError` (see there)."""
    try:
        return (yield from generator)
    except RuntimeError as exc:
        raise JobError(f"{type(exc).__name__}: {exc}") from exc


@dataclass
class Handlers:
    """GUI-thread callbacks. ``cancelled`` gets the number of finished updates; ``finished`` always runs."""

    yielded: Callable[[Any], None] | None = None
    returned: Callable[[Any], None] | None = None
    errored: Callable[[BaseException], None] | None = None
    cancelled: Callable[[int], None] | None = None
    finished: Callable[[], None] | None = None


def _report(exc: BaseException, where: str) -> None:
    from napari.utils.notifications import show_error

    if isinstance(exc, JobError):
        message = str(exc)
    else:
        cause = f" (cause: {type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        message = f"{type(exc).__name__}: {exc}{cause}"
    show_error(f"GEM-3D {where} failed: {message}")


def run_once(fn, *args, **kwargs):
    """A generator that runs ``fn`` once and returns its value (a :class:`Job` for one blocking call)."""
    return fn(*args, **kwargs)
    yield  # pragma: no cover - makes this a generator function


class Job:
    """One background run of ``generator`` with napari progress (``total`` updates) and cancel."""

    def __init__(
        self,
        generator: Generator,
        *,
        total: int,
        desc: str,
        handlers: Handlers,
        token: CancelToken | None = None,
    ):
        from napari.qt.threading import create_worker

        self.token = token if token is not None else JobToken()
        self.handlers = handlers
        self.desc = desc
        self.updates = 0
        self.state = "pending"  # pending | running | done | cancelled | failed
        self.finished = False  # True once every handler, including `finished`, has run
        self.started_at = 0.0
        self._generator = generator

        def drive():
            return (yield from guarded(generator))

        drive.__qualname__ = drive.__name__ = desc  # napari's task list shows the function name
        self.worker = create_worker(
            drive, _start_thread=False, _ignore_errors=True, _progress={"total": int(total), "desc": desc}
        )
        if isinstance(self.token, JobToken):
            self.token.worker = self.worker
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)

    # ------------------------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self.state in ("pending", "running")

    def start(self) -> Job:
        self.state = "running"
        self.started_at = time.perf_counter()
        hold_gc_while(self.worker)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Stop within one denoising step; finished updates stay (the handlers mark them partial)."""
        if not self.running:
            return
        self.token.cancel()
        self.worker.quit()

    def set_message(self, text: str) -> None:
        pbar = getattr(self.worker, "pbar", None)
        if pbar is not None:
            pbar.set_description(f"{self.desc}: {text}")

    # ------------------------------------------------------------------------------- GUI-thread slots
    def _call(self, handler, *args) -> None:
        if handler is None:
            return
        try:
            handler(*args)
        except Exception as exc:  # never raise out of a Qt slot
            _report(exc, self.desc)

    def _on_yielded(self, value) -> None:
        self.updates += 1
        if self.state == "running":
            self._call(self.handlers.yielded, value)

    def _on_returned(self, value) -> None:
        if self.token.cancelled:  # finished its last window just as Cancel was pressed
            self._cancelled()
            return
        self.state = "done"
        self._call(self.handlers.returned, value)

    def _on_errored(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) or self.token.cancelled:
            self._cancelled()
            return
        self.state = "failed"
        if self.handlers.errored is not None:
            self._call(self.handlers.errored, exc)
        else:
            _report(exc, self.desc)

    def _on_aborted(self) -> None:
        self._cancelled()

    def _cancelled(self) -> None:
        if self.state == "cancelled":
            return
        self.state = "cancelled"
        self._call(self.handlers.cancelled, self.updates)

    def _on_finished(self) -> None:
        if self.state == "running":  # quit() without a token check (napari's own cancel button)
            self._cancelled()
        with contextlib.suppress(RuntimeError, ValueError):  # ValueError: still executing elsewhere
            self._generator.close()  # runs the sampler's `finally` now if it stopped early
        self._call(self.handlers.finished)
        self.finished = True
