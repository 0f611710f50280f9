"""Window plans: exact coverage, known frames at true positions, rounds, and the official arithmetic."""

from __future__ import annotations

import math

import pytest

from napari_gem3d.sampling import coverage, plan_windows, rounds

CASES = [(n, w, h) for n in (1, 2, 5, 15, 16, 17, 31, 40, 64, 100, 155) for w, h in ((16, 1), (16, 3), (8, 0), (4, 1))]


def _generated_once(plan, n):
    return coverage(plan, n) == [1] * n


@pytest.mark.parametrize("n,w,h", CASES)
def test_every_slice_generated_exactly_once_for_every_start(n, w, h):
    for s in range(n):
        for start_known in (False, True):
            plan = plan_windows(n, w, h, s, start_known=start_known)
            assert _generated_once(plan, n), (n, w, h, s, start_known)
            generated_before: set[int] = {s} if start_known else set()
            for rnd in rounds(plan):
                for win in rnd:
                    assert 0 <= win.start < win.stop <= n  # inside the volume
                    assert win.length == min(w, n)
                    # known frames sit at their true positions and were generated in an earlier round
                    assert win.known_slices == tuple(win.start + f for f in win.known)
                    assert set(win.known_slices) <= generated_before
                    # known frames are never regenerated; written frames were not generated before
                    assert not set(win.known) & set(win.write)
                    assert not {win.start + f for f in win.write} & generated_before
                    # emitted slices are contiguous
                    z0, z1 = win.emit_range
                    assert list(range(z0, z1)) == [win.start + f for f in win.emitted]
                    if win.informed_slice is not None:
                        assert win.informed_slice in generated_before
                for win in rnd:
                    generated_before |= {win.start + f for f in win.emitted}


@pytest.mark.parametrize("n,w,h", [(155, 16, 1), (64, 16, 1), (40, 16, 3)])
def test_overlap_and_rounds(n, w, h):
    plan = plan_windows(n, w, h, n // 2)
    assert plan[0].direction == "first" and plan[0].round == 0
    for rnd in rounds(plan)[1:]:
        assert sorted(win.direction for win in rnd) in (["down", "up"], ["up"], ["down"])
    for win in plan[1:]:
        assert len(win.known) >= h  # at least the requested overlap (more for a slid-back last window)
        prev_edge = win.start if win.direction == "up" else win.stop - 1
        assert prev_edge in win.known_slices


def test_one_round_per_direction_step_and_start_centred():
    plan = plan_windows(155, 16, 1, 77)
    assert plan[0].start <= 77 < plan[0].stop
    assert abs((plan[0].start + plan[0].stop - 1) / 2 - 77) <= 0.5
    assert len(rounds(plan)) == 1 + math.ceil((155 - 16) / 2 / 15)


@pytest.mark.parametrize("n,w,h", CASES)
def test_the_fewest_windows_a_first_window_on_the_start_allows(n, w, h):
    """Whatever the start, the plan takes 1 + ceil((n - w) / (w - h)) windows: no more than a plan whose
    first window is placed freely (a first window centred on the start can cost one more)."""
    fewest = 1 if n <= w else 1 + math.ceil((n - w) / (w - h))
    for s in range(n):
        plan = plan_windows(n, w, h, s)
        assert len(plan) == fewest and plan[0].start <= s < plan[0].stop, (n, w, h, s)


def test_the_demo_volume_needs_no_window_for_a_single_slice():
    """76 slices (the demo case), window 16, overlap 1, start 38: centred on 38 the first window (31-46) left
    slice 0 to a sixth window of its own, in a fourth round; starting at 30 it takes 5 windows in 3 rounds."""
    plan = plan_windows(76, 16, 1, 38)
    assert (plan[0].start, len(plan), len(rounds(plan))) == (30, 5, 3)


def test_start_known_pastes_the_true_slice():
    plan = plan_windows(64, 16, 1, 20, start_known=True)
    first = plan[0]
    assert first.known == (20 - first.start,) and first.provided == first.known
    assert 20 not in {first.start + f for f in first.write}


def test_short_volume_shrinks_the_window():
    plan = plan_windows(10, 16, 1, 3)
    assert len(plan) == 1 and (plan[0].start, plan[0].stop) == (0, 10) and plan[0].known == ()


@pytest.mark.parametrize(
    "args,match",
    [
        ((0, 16, 1, 0), "num_slices"), ((10, 16, 1, 10), "outside"), ((10, 16, 16, 0), "overlap"),
        ((10, 0, 0, 0), "window"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(*args)


def test_official_plan_reproduces_the_worked_example():
    """reference-gem3d.md §9.6: N = 155, s = 77."""
    plan = plan_windows(155, 16, 1, 77, official=True)
    ups = [(w.start, w.stop) for w in plan if w.direction == "up"]
    downs = [(w.start, w.stop) for w in plan if w.direction == "down"]
    assert ups == [(77, 93), (92, 108), (107, 123), (122, 138), (137, 153), (139, 155)]
    assert downs == [(62, 78), (47, 63), (32, 48), (17, 33), (2, 18), (0, 16)]
    last_up = [w for w in plan if w.direction == "up"][-1]
    assert last_up.known == (0,) and last_up.known_slices == (152,)  # pasted 13 slices off (B3)
    last_down = [w for w in plan if w.direction == "down"][-1]
    assert last_down.known == (15,) and last_down.known_slices == (2,)
    counts = coverage(plan, 155)
    assert counts[77] == 2  # slice s twice (B5)
    assert all(c == 2 for c in counts[140:153])  # overwritten by the misaligned last window


@pytest.mark.parametrize("s", range(155))
def test_official_plan_hole_exactly_when_s_mod_15_is_1(s):
    holes = [z for z, c in enumerate(coverage(plan_windows(155, 16, 1, s, official=True), 155)) if c == 0]
    if s % 15 == 1:
        assert holes == [15 if s >= 16 else 0]  # bug B4
    else:
        assert holes == []
    window_count = len(plan_windows(155, 16, 1, s, official=True))
    assert 11 <= window_count <= 12 or s in (0, 1, 154)
