"""What a user reads from the command line, checked for its values (not its format) against the
oracle of tests/reference_oracle.py: prediction rows, printed statistics, metadata, error lines.

Every run is what ``python main.py ...`` does, run in process, on a tiny lossless clip (r2plus1d_18, cpu).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests import reference_oracle as oracle
from tests.conftest import run_here

R18 = "r2plus1d_18_16_kinetics"
FPS = 10.0
STACK, STEP = 3, 2  # overlapping windows, stack != step
NUM_FRAMES = 10  # windows (0, 3), (2, 5), (4, 7), (6, 9)


def known_logits() -> np.ndarray:
    """400 logits with a clear top 5 at scattered indices (first, last and neighbours of each
    other's labels), and enough mass in the other 395 classes that a softmax over the top 5
    alone would print different probabilities."""
    logits = np.random.default_rng(5).uniform(-3.0, 0.5, oracle.NUM_CLASSES).astype(np.float32)
    for index, value in zip((17, 0, 399, 18, 250), (4.0, 3.25, 2.5, 1.75, 1.0)):
        logits[index] = value
    return logits


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli_values")
    return oracle.write_video(folder / "my clip.mkv", oracle.test_frames(NUM_FRAMES, 30, 44, seed=11), fps=FPS)


@pytest.fixture(scope="module")
def known_head_checkpoint(tmp_path_factory) -> Path:
    """r2plus1d_18 weights whose fc gives :func:`known_logits` for every window."""
    return oracle.make_checkpoint(tmp_path_factory.mktemp("known_head") / "r18.pth", R18, seed=99,
                                  fc_bias=known_logits())


def cli(checkpoint: Path, video: Path, *extra: str, cwd: Path):
    return run_here("feature_type=r21d", f"model_name={R18}", "device=cpu", f"video_paths=[{video}]",
                    f"checkpoint_path={checkpoint}", f"stack_size={STACK}", f"step_size={STEP}", "progress=false",
                    *extra, cwd=cwd)


def prediction_blocks(stdout: str) -> dict[tuple[int, int], list[tuple[str, str, str]]]:
    """``{(start, end): [(logit text, prob text, label), ... 5 rows]}`` from show_pred output."""
    lines = stdout.splitlines()
    blocks = {}
    for i, line in enumerate(lines):
        match = re.fullmatch(r"At frames \((\d+), (\d+)\)", line)
        if match:
            assert lines[i + 1] == "  Logits | Prob. | Label "
            rows = [tuple(row.split(" | ", 2)) for row in lines[i + 2:i + 7]]
            assert lines[i + 7] == ""
            blocks[(int(match[1]), int(match[2]))] = rows
    return blocks


def expected_rows(logits_row: np.ndarray) -> list[tuple[str, str, str]]:
    return [(f"{logit:8.3f}", f"{prob:.3f}", label)
            for label, logit, prob in oracle.top5(logits_row, oracle.kinetics_labels())]


# ---------------------------------------------------------------- show_pred

def test_prediction_rows_are_labels_logits_and_softmax_over_all_classes(known_head_checkpoint, clip, tmp_path):
    proc = cli(known_head_checkpoint, clip, "show_pred=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    blocks = prediction_blocks(proc.stdout)
    assert list(blocks) == oracle.windows(NUM_FRAMES, STACK, STEP)
    want = expected_rows(known_logits())
    # Spelled out once, so the oracle's softmax is checked too.
    labels = oracle.kinetics_labels()
    assert [row[2] for row in want] == [labels[i] for i in (17, 0, 399, 18, 250)]
    assert [row[0] for row in want] == ["   4.000", "   3.250", "   2.500", "   1.750", "   1.000"]
    probs = np.exp(known_logits().astype(np.float64))
    probs /= probs.sum()
    assert [row[1] for row in want] == [f"{probs[i]:.3f}" for i in (17, 0, 399, 18, 250)]
    assert float(want[0][1]) < 0.5  # the other 395 classes hold real mass: top-5 renormalising shows
    for bounds, rows in blocks.items():
        assert rows == want, bounds


def test_prediction_rows_follow_the_oracle_logits(checkpoints, clip, tmp_path):
    proc = cli(checkpoints[R18], clip, "show_pred=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    blocks = prediction_blocks(proc.stdout)
    want = oracle.reference(R18, checkpoints[R18], clip, STACK, STEP)
    assert list(blocks) == want.window_bounds
    for bounds, logits_row in zip(want.window_bounds, want.logits):
        rows = blocks[bounds]
        top = oracle.top5(logits_row, oracle.kinetics_labels())
        assert [r[2] for r in rows] == [label for label, _, _ in top], bounds
        for (logit_text, prob_text, _), (_, logit, prob) in zip(rows, top):
            assert float(logit_text) == pytest.approx(logit, abs=5e-4 + 1e-5 * abs(logit))
            assert float(prob_text) == pytest.approx(prob, abs=5e-4 + 1e-5)


# ---------------------------------------------------------------- print, save and metadata agree

@pytest.fixture(scope="module")
def saved_and_printed(checkpoints, clip, tmp_path_factory):
    """One save_numpy run with save_metadata and one print run, same clip and settings."""
    folder = tmp_path_factory.mktemp("print_vs_save")
    saved = cli(checkpoints[R18], clip, "on_extraction=save_numpy", "save_metadata=true",
                f"output_path={folder / 'out'}", cwd=folder)
    printed = cli(checkpoints[R18], clip, "on_extraction=print", cwd=folder)
    return saved, printed, folder / "out" / "r21d" / R18


def test_saved_features_and_window_spans_match_the_oracle(checkpoints, clip, saved_and_printed):
    saved, _, out = saved_and_printed
    assert saved.returncode == 0, saved.stderr
    want = oracle.reference(R18, checkpoints[R18], clip, STACK, STEP)
    features = np.load(out / "my clip_r21d.npy")
    assert features.dtype == np.float32 and features.shape == (4, 512)
    assert oracle.rel_err(features, want.features) <= 1e-5
    frames = np.load(out / "my clip_window_frames.npy")
    assert frames.tolist() == [list(b) for b in want.window_bounds] == [[0, 3], [2, 5], [4, 7], [6, 9]]
    assert float(np.load(out / "my clip_fps.npy")) == pytest.approx(FPS)
    np.testing.assert_allclose(np.load(out / "my clip_window_times_s.npy"), frames / FPS, rtol=0, atol=1e-9)


def test_printed_statistics_are_those_of_the_saved_array(saved_and_printed):
    saved, printed, out = saved_and_printed
    assert saved.returncode == 0 and printed.returncode == 0, (saved.stderr, printed.stderr)
    features = np.load(out / "my clip_r21d.npy").astype(np.float64)
    [stats] = re.findall(r"^max: (\S+); mean: (\S+); min: (\S+)$", printed.stdout, re.M)
    got_max, got_mean, got_min = (float(v) for v in stats)
    scale = np.abs(features).max()
    assert got_max == pytest.approx(features.max(), abs=1e-6 * scale)
    assert got_mean == pytest.approx(features.mean(), abs=1e-6 * scale)
    assert got_min == pytest.approx(features.min(), abs=1e-6 * scale)
    lines = printed.stdout.splitlines()
    assert lines[0].startswith("Features for ") and lines[0].endswith("my clip.mkv:")  # the block names its video
    assert lines[1] == "r21d"


# ---------------------------------------------------------------- errors: one line, no traceback

def assert_one_error_line(proc, *needles: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "override,needles",
    [
        ("stack_size=0", ("stack_size=0", ">= 1")),
        ("model_name=r3d_18", ("model_name='r3d_18'", "r2plus1d_18_16_kinetics", "r2plus1d_34_8_ig65m_ft_kinetics")),
        ("precision=int8", ("precision='int8'", "fp32, bf16, fp16")),
        ("checkpoint_path=/nonexistent/w.pth", ("checkpoint_path='/nonexistent/w.pth'", "r2plus1d_18-91a641e6.pth")),
        ("stack_size=abc", ("stack_size", "abc")),
    ],
)
def test_bad_setting_is_one_error_line_without_traceback(clip, tmp_path, override, needles):
    args = ["feature_type=r21d", "device=cpu", f"video_paths={clip}", override]
    if not override.startswith("checkpoint_path"):
        args.append("random_weights=true")
    proc = run_here(*args, cwd=tmp_path)
    assert_one_error_line(proc, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing was written
