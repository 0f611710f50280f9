"""Cooperative cancellation: a token the GUI sets, checked by the sampler between denoising steps."""

from __future__ import annotations

import threading


class Cancelled(Exception):  # noqa: N818 - reads naturally at the call site: `except Cancelled`
    """Generation was cancelled; ``completed`` windows were finished and yielded before it stopped."""

    def __init__(self, completed: int = 0, total: int = 0):
        self.completed, self.total = completed, total
        super().__init__(f"cancelled after {completed} of {total} windows")


class CancelToken:
    """Thread-safe flag. ``cancel()`` from any thread; the sampler calls ``check()``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.progress = (0, 0)  # (completed windows, total) as last seen by the sampler

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(*self.progress)
