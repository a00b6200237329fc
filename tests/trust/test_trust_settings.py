"""Settings: every bad setting, what Hydra refuses itself included, and devices this build cannot
use, is one line naming the key, the value and what is allowed; exit 2 before any work."""

from __future__ import annotations

import pytest

from tests.helpers import write_test_video
from tests.trust.trust_helpers import assert_no_traceback, cli_args, run

# argument -> what the one line must name (besides "error:")
BAD = {
    "stack_size=1.5": ["stack_size=1.5", "integer"],
    "batch_size=abc": ["batch_size=abc", "integer"],
    "output_path=null": ["output_path=null", "string"],
    "feature_type=i3d": ["feature_type=i3d", "allowed: r21d"],
    "video_paths=[a.mp4,": ["video_paths=[a.mp4,", "quote"],
    "device=mps": ["device='mps'", "allowed: cpu, cuda"],
    "device=xpu:0": ["device='xpu:0'", "allowed: cpu, cuda"],
    "device=meta": ["device='meta'", "allowed: cpu, cuda"],
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.mark.parametrize("arg", list(BAD))
def test_bad_setting_is_one_line_and_exit_2_before_any_work(tmp_path, clip, arg):
    proc = run(cli_args(tmp_path, f"video_paths=[{clip}]") + [arg])
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in BAD[arg]:
        assert part in lines[0], (part, lines[0])
    assert not (tmp_path / "out").exists() and not (tmp_path / "tmp").exists()
