"""Window index arithmetic: which frames make which clip.

With ``N`` decoded frames, window size ``S`` (``stack_size``) and step ``P``
(``step_size``), windows start at frames ``0, P, 2P, ...`` and only full windows
count::

    frames   0 1 2 3 4 5 6 7 8 9            N = 10, S = 4, P = 3
    win 0    [0 1 2 3]
    win 1          [3 4 5 6]
    win 2                [6 7 8 9]
    (win 3 would need frames 9..12: dropped, it is not full)

    count = max(0, (N - S) // P + 1);   window i covers frames [i*P, i*P + S)

Windows overlap when ``P < S`` and leave gaps when ``P > S``; frames in a gap
are never used, so a streaming decoder need not convert them.
"""

from __future__ import annotations


def count_windows(num_frames: int, stack_size: int, step_size: int) -> int:
    """Number of full windows of ``stack_size`` frames, one every ``step_size`` frames."""
    _check_positive(stack_size=stack_size, step_size=step_size)
    if num_frames < stack_size:
        return 0
    return (num_frames - stack_size) // step_size + 1


def window_bounds(num_frames: int, stack_size: int, step_size: int) -> list[tuple[int, int]]:
    """``[(start_frame, end_frame_exclusive), ...]`` of every full window."""
    n = count_windows(num_frames, stack_size, step_size)
    return [(i * step_size, i * step_size + stack_size) for i in range(n)]


def is_frame_used(frame_index: int, stack_size: int, step_size: int) -> bool:
    """True when frame ``frame_index`` falls inside some window's span.

    Every frame is inside a span when windows touch or overlap (``S >= P``);
    with gaps (``S < P``) only the first ``S`` frames of each step are.
    (Frames of a trailing partial window also count as used: the stream does not
    know yet that the video will end before that window fills.)
    """
    return frame_index % step_size < stack_size


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name}={value} is invalid: it must be an integer >= 1")
