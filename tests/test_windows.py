import numpy as np
import pytest
import torch

from r21d_features.utils.video.window_stream import WindowStream
from r21d_features.utils.video.windows import count_windows, is_frame_used, window_bounds


def brute_force_bounds(n, s, p):
    return [(i, i + s) for i in range(0, n, p) if i + s <= n]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 31, 32, 33, 100])
@pytest.mark.parametrize("s,p", [(16, 16), (16, 8), (8, 16), (1, 1), (32, 5), (3, 7)])
def test_window_bounds_match_brute_force(n, s, p):
    assert window_bounds(n, s, p) == brute_force_bounds(n, s, p)
    assert count_windows(n, s, p) == len(brute_force_bounds(n, s, p))


def test_spec_formula_and_short_video():
    assert count_windows(132, 16, 16) == 8
    assert count_windows(15, 16, 16) == 0  # shorter than one window: no window, not an error
    assert window_bounds(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]


@pytest.mark.parametrize("s,p", [(4, 6), (16, 16), (8, 3)])
def test_is_frame_used_is_exactly_the_union_of_windows(s, p):
    n = 60
    used = set()
    for a, b in window_bounds(n + s, s, p):  # include windows past n: the stream cannot know n
        used.update(range(a, b))
    assert [i for i in range(n) if is_frame_used(i, s, p)] == [i for i in range(n) if i in used]


@pytest.mark.parametrize("bad", [0, -1])
def test_non_positive_sizes_rejected(bad):
    with pytest.raises(ValueError, match="stack_size"):
        count_windows(10, bad, 1)
    with pytest.raises(ValueError, match="step_size"):
        count_windows(10, 1, bad)


@pytest.mark.parametrize("s,p", [(5, 5), (5, 2), (3, 7), (1, 4)])
@pytest.mark.parametrize("chunk", [1, 4, 9])
def test_window_stream_cuts_the_same_windows_as_slicing(s, p, chunk):
    n = 37
    frames = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, 1, 1).contiguous()
    kept = [i for i in range(n) if is_frame_used(i, s, p)]
    stream = WindowStream(s, p)
    got = []
    for k in range(0, len(kept), chunk):
        idx = np.array(kept[k : k + chunk])
        got += stream.push(idx, frames[idx])
    assert [start for start, _ in got] == [a for a, _ in window_bounds(n, s, p)]
    for start, window in got:
        assert torch.equal(window, frames[start : start + s])
