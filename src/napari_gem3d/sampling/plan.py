"""Window plans: which slices each window generates, which frames it already knows, and when.

Default plan (corrected GEM-3D)
    A first window contains the start slice ``s``: of the places that do, the one needing the fewest
    windows, then the fewest rounds, then the one nearest to centring it on ``s``. (Centring alone can cost
    a whole window for one slice: 76 slices, window 16, overlap 1 take 5 windows when the first one starts
    at slice 30, but 6 when it starts at 31, centred on slice 38.)
    Then windows propagate up (toward z = N-1) and down (toward 0), each overlapping the slices
    generated before it by ``overlap`` frames. The last window of a direction slides back to stay
    inside the volume, and *every* frame that overlaps already-generated slices is marked known,
    at its true position. Every slice is generated exactly once; known frames are never written.
    Round k holds the k-th up and the k-th down window: they run in one batched call.

Volumes shorter than the window get one shorter window (the networks take any frame count:
temporal layers are convolutions and attention along frames).

``official=True`` reproduces the official driver's arithmetic, bugs included (reference
§9.2-9.3, bugs B3-B5): misaligned known frame in the last windows, overwrites, the coverage
hole when ``s % 15 == 1`` and slice ``s`` generated twice (the downward write wins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Direction = str  # "first" | "up" | "down" | "bridge" (local regeneration)


@dataclass(frozen=True)
class Window:
    index: int  # position in the plan (also seeds the window's noise)
    start: int  # first slice (inclusive)
    stop: int  # last slice (exclusive)
    direction: Direction
    known: tuple[int, ...]  # frame indices pasted from already-generated latents
    round: int  # windows with the same round run in one batched call
    write: tuple[int, ...]  # frame indices whose result is written into the volume
    known_slices: tuple[int, ...]  # slice whose latent fills each known frame (== start + frame unless official)
    informed_slice: int | None  # slice whose generated latent is this window's informed latent (None: the initial one)
    provided: tuple[int, ...] = ()  # known frames whose *given* latent this window puts into the volume (start slice)

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def emitted(self) -> tuple[int, ...]:
        """Frames that become final when this window finishes (written or provided), sorted."""
        return tuple(sorted(self.write + self.provided))

    @property
    def emit_range(self) -> tuple[int, int]:
        """Slices final after this window, as ``[z0, z1)`` (always contiguous)."""
        frames = self.emitted
        return self.start + frames[0], self.start + frames[-1] + 1


def _validate(num_slices: int, window: int, overlap: int, start: int) -> None:
    for name, value in (("num_slices", num_slices), ("window", window), ("overlap", overlap), ("start", start)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window) = [0, {window}), got {overlap}")
    if not 0 <= start < num_slices:
        raise ValueError(f"start slice {start} is outside the volume [0, {num_slices})")


def plan_windows(
    num_slices: int,
    window: int,
    overlap: int,
    start: int,
    *,
    start_known: bool = False,
    official: bool = False,
    first_start: int | None = None,
) -> list[Window]:
    """Ordered windows generating a volume of ``num_slices`` slices from start slice ``start``.

    ``start_known``: the informed slice *is* slice ``start`` of this volume; its latent is pasted
    as a known frame of the first window and that slice is not generated.
    ``first_start``: where the first window starts, instead of the fewest-windows choice (rebuilding the plan
    of an earlier result: :func:`centred_first_start` for results made before 2026-12-07's change).
    """
    _validate(num_slices, window, overlap, start)
    if official:
        if overlap != 1:
            raise ValueError("the official plan is defined for overlap 1 only")
        return _official_plan(num_slices, window, start)
    if first_start is not None:
        w = min(window, num_slices)
        if not max(0, start - w + 1) <= first_start <= min(start, num_slices - w):
            raise ValueError(f"a first window starting at {first_start} does not hold start slice {start} inside "
                             f"the volume [0, {num_slices}) with window {w}")
    return _plan(num_slices, window, overlap, start, start_known, first_start)


def _make(index, start, stop, direction, known, rnd, informed, provided=()) -> Window:
    frames = range(stop - start)
    return Window(
        index=index,
        start=start,
        stop=stop,
        direction=direction,
        known=tuple(known),
        round=rnd,
        write=tuple(f for f in frames if f not in set(known)),
        known_slices=tuple(start + f for f in known),
        informed_slice=informed,
        provided=tuple(provided),
    )


def centred_first_start(num_slices: int, window: int, start: int) -> int:
    """The first window centred on ``start`` where the volume allows (the plan's rule before 2026-12-07)."""
    w = min(window, num_slices)
    return min(max(start - (w - 1) // 2, 0), num_slices - w)


def _first_start(n: int, w: int, h: int, s: int) -> int:
    """Where the first window starts (module docstring): fewest windows, then rounds, then nearest centred."""
    centred = centred_first_start(n, w, s)

    def cost(lo: int) -> tuple[int, int, int]:
        up, down = _propagation(n, w, h, lo)
        return len(up) + len(down), max(len(up), len(down)), abs(lo - centred)

    return min(range(max(0, s - w + 1), min(s, n - w) + 1), key=cost)


def _propagation(n: int, w: int, h: int, lo: int) -> tuple[list, list]:
    """(start, known frames, informed slice) of the up and of the down windows after a first window at ``lo``."""
    up, down = [], []
    hi = lo + w  # generated region [lo, hi)
    # up
    prev_stop = hi
    while prev_stop < n:
        start = min(prev_stop - h, n - w)
        known = [f for f in range(w) if start + f < prev_stop]
        up.append((start, known, prev_stop - 1))
        prev_stop = start + w
    # down
    prev_start = lo
    while prev_start > 0:
        start = max(prev_start + h - w, 0)
        known = [f for f in range(w) if start + f >= prev_start]
        down.append((start, known, prev_start))
        prev_start = start
    return up, down


def _plan(n: int, w: int, h: int, s: int, start_known: bool, first_start: int | None) -> list[Window]:
    w = min(w, n)
    first_start = _first_start(n, w, h, s) if first_start is None else first_start
    first_known = (s - first_start,) if start_known else ()
    windows = [_make(0, first_start, first_start + w, "first", first_known, 0, None, first_known)]
    up, down = _propagation(n, w, h, first_start)
    index = 1
    for rnd in range(1, max(len(up), len(down)) + 1):
        for direction, seq in (("up", up), ("down", down)):
            if rnd <= len(seq):
                start, known, informed = seq[rnd - 1]
                windows.append(_make(index, start, start + w, direction, known, rnd, informed))
                index += 1
    return windows


def plan_bridge(num_slices: int, window: int, overlap: int, lo: int, hi: int) -> list[Window]:
    """Windows that regenerate slices ``[lo, hi)`` of a finished volume and nothing else.

    Windows sweep up from ``lo``, one per round. In each, every frame below what is already final
    (slices under ``lo``, then the overlap with the window before) and every frame at or above ``hi`` is
    known: the regenerated range is held by the finished volume on both sides at every step (RePaint
    at both boundaries). The window's informed latent is the slice just below it (``lo - 1`` for the
    first; at the volume's bottom, the slice above the range, else the initial informed latent).
    Every slice of ``[lo, hi)`` is written exactly once; no other slice is written.
    """
    _validate(num_slices, window, overlap, min(max(lo, 0), num_slices - 1))
    if not 0 <= lo < hi <= num_slices:
        raise ValueError(f"the range to regenerate [{lo}, {hi}) must be a non-empty part of [0, {num_slices})")
    # two frames of overlap: a window that would end exactly at `hi` moves up one and still holds a
    # finished slice below, so the slice at `hi` is held too (with one frame it would lose one side)
    w, h = min(window, num_slices), max(overlap, 2)
    windows: list[Window] = []
    done = lo  # slices below `done` are final (the finished volume, then earlier windows)
    # a range that fits one window sits in its middle: as much finished context below as above
    start = min(max(lo - max(h, (w - (hi - lo)) // 2), 0), num_slices - w)
    while done < hi:
        if start + w == hi < num_slices and start + 1 < done:
            start += 1
        known = [f for f in range(w) if start + f < done or start + f >= hi]
        informed = done - 1 if done > 0 else (hi if hi < num_slices else None)
        windows.append(_make(len(windows), start, start + w, "bridge", known, len(windows), informed))
        done = min(start + w, hi)
        start = min(done - h, num_slices - w)
    return windows


def _official_plan(n: int, w: int, s: int) -> list[Window]:
    if n < w:
        # the official code cannot run here (it raises); use one short free window
        return [_make(0, 0, n, "first", (), 0, None)]
    stride = w - 1
    n_up = math.ceil((n - 1 - s) / stride)
    n_down = math.ceil((s - 1) / stride) if s > 1 else 0  # bug B4 (should be ceil(s / stride))
    ups, downs = [], []
    for i in range(n_up):
        last = i == n_up - 1
        start = n - w if last else s + stride * i
        if i == 0:
            write = tuple(range(1, w)) if last else tuple(range(w))
            ups.append(Window(0, start, start + w, "up", (), 0, write, (), None))
        else:
            # the known latent is window i-1's last slice, pasted into frame 0 wherever the window is (B3)
            src = s + stride * i
            ups.append(Window(0, start, start + w, "up", (0,), 0, tuple(range(1, w)), (src,), src))
    for i in range(n_down):
        last = i == n_down - 1
        start = 0 if last else s - stride * i - stride
        if i == 0:
            write = tuple(range(w - 1)) if last else tuple(range(w))
            downs.append(Window(0, start, start + w, "down", (), 0, write, (), None))
        else:
            src = s - stride * i
            downs.append(Window(0, start, start + w, "down", (w - 1,), 0, tuple(range(w - 1)), (src,), src))
    out = []
    for rnd in range(max(n_up, n_down)):
        for seq in (ups, downs):  # within a round the downward write lands last, as in the official order
            if rnd < len(seq):
                win = seq[rnd]
                out.append(Window(len(out), win.start, win.stop, win.direction, win.known, rnd, win.write,
                                  win.known_slices, win.informed_slice))
    return out


def rounds(windows: list[Window]) -> list[list[Window]]:
    """Windows grouped by round, in order."""
    grouped: dict[int, list[Window]] = {}
    for win in windows:
        grouped.setdefault(win.round, []).append(win)
    return [grouped[k] for k in sorted(grouped)]


def coverage(windows: list[Window], num_slices: int) -> list[int]:
    """How many times each slice is written by the plan (the default plan gives all ones)."""
    counts = [0] * num_slices
    for win in windows:
        for f in win.emitted:
            counts[win.start + f] += 1
    return counts
