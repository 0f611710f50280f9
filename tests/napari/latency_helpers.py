"""Event-loop latency: a 10 ms Qt timer's ticks while a job runs, and the window arrivals among them."""

from __future__ import annotations

import time

import numpy as np


class TickRecorder:
    """Start before the job, stop after it: ``gaps_ms`` are the spaces between the timer's ticks."""

    def __init__(self, widget, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.windows: list[float] = []
        original = widget._on_window

        def note_window(message):
            original(message)
            self.windows.append(time.perf_counter())

        widget._on_window = note_window
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> float:
        self.timer.start()
        self.started = time.perf_counter()
        return self.started

    def stop(self) -> np.ndarray:
        self.timer.stop()
        return self.gaps_ms

    @property
    def gaps_ms(self) -> np.ndarray:
        return np.diff(np.asarray(self.ticks)) * 1000.0
