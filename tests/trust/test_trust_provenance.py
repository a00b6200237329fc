"""Provenance: a re-run skips only outputs made with the same settings; anything else stops the run
before any work (one line, the differing settings, the two ways out) unless ``overwrite=true``.
Weights with NaN/Inf are refused at load; a video whose features are not finite fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import write_test_video
from tests.trust.trust_helpers import (MODEL, assert_no_traceback, cli_args, failed_lines, features, features_folder,
                                       leftovers, run, run_in_process)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [write_test_video(folder / f"clip{i}.mp4", num_frames=24 + 8 * i) for i in range(2)]


def videos(clips: list[Path]) -> str:
    return "video_paths=[" + ",".join(str(c) for c in clips) + "]"


def snapshot(tmp_path: Path) -> dict[str, bytes]:
    """Every file of the output folder (records and report included) with its bytes."""
    folder = features_folder(tmp_path)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith(("WARNING", "INFO"))]


def report(tmp_path: Path) -> list[dict]:
    text = (features_folder(tmp_path) / "run_report.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.slow
def test_rerun_with_other_settings_stops_then_overwrite_redoes_and_resumes(tmp_path, clips, checkpoints):
    assert run(cli_args(tmp_path, videos(clips))).returncode == 0
    assert {r["weights"] for r in report(tmp_path)} == {"random"}  # random-weight outputs say so
    before = snapshot(tmp_path)

    # Each changed setting (weights included) is named, with the value of the outputs and the current one.
    cases = {
        ("stack_size=8", "precision=bf16"): ["stack_size=4 (now 8)", "precision=fp32 (now bf16)"],
        ("extraction_fps=5",): ["extraction_fps=null (now 5.0)"],
        ("decoder=opencv",): ["decoder=pyav (now opencv)"],  # same file names and shapes, other numbers
        ("crops=five",): ["crops=center (now five)"],  # same file names, other shape
        ("random_weights=false", f"checkpoint_path={checkpoints[MODEL]}"): ["weights=random (now sha256:"],
    }
    for change, named in cases.items():
        proc = run_in_process(cli_args(tmp_path, videos(clips), *change))
        assert proc.returncode == 2, proc.stderr
        assert_no_traceback(proc)
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: 2 existing output"), proc.stderr
        for part in named + ["output_path", "overwrite=true"]:
            assert part in lines[0], (part, lines[0])
        assert snapshot(tmp_path) == before  # nothing done: not even a report line

    # overwrite=true redoes them with the new settings; the same command again skips them.
    proc = run(cli_args(tmp_path, videos(clips), "stack_size=8", "overwrite=true"))
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in report(tmp_path)[-2:]] == ["done", "done"]
    assert [features(tmp_path, c.stem).shape[0] for c in clips] == [5, 7]  # 24 and 32 frames, windows of 8 every 4
    proc = run(cli_args(tmp_path, videos(clips), "stack_size=8"))
    assert proc.returncode == 0 and "2 skipped" in proc.stderr, proc.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_output_without_a_record_is_unknown_provenance(tmp_path, clips):
    assert run(cli_args(tmp_path, videos(clips))).returncode == 0
    folder = features_folder(tmp_path)
    record = folder / f".{clips[0].stem}_r21d.npy.provenance.json"
    assert record.is_file()
    record.unlink()  # as an older version left it
    proc = run_in_process(cli_args(tmp_path, videos(clips)))
    assert proc.returncode == 2
    assert "no provenance record" in proc.stderr and "overwrite=true" in proc.stderr, proc.stderr
    proc = run(cli_args(tmp_path, videos(clips), "overwrite=true"))
    assert proc.returncode == 0, proc.stderr
    assert [(r["path"], r["status"]) for r in report(tmp_path)[-2:]] == [(str(clips[1]), "skipped"),
                                                                        (str(clips[0]), "done")]
    assert record.is_file()


@pytest.mark.slow
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, clips, checkpoints, poison):
    state = torch.load(checkpoints[MODEL], weights_only=True)
    state["layer3.0.conv1.0.0.weight"][0, 0, 0, 0, 0] = poison
    bad = tmp_path / "poisoned.pth"
    torch.save(state, bad)
    proc = run(cli_args(tmp_path, videos(clips), "random_weights=false", f"checkpoint_path={bad}"))
    assert proc.returncode == 2
    assert_no_traceback(proc)
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "NaN/Inf" in lines[0] and str(bad) in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_video_with_non_finite_features_fails_and_nothing_is_saved(tmp_path, clips, checkpoints):
    state = torch.load(checkpoints[MODEL], weights_only=True)
    state["stem.0.weight"].fill_(1e38)  # finite weights whose activations overflow float32
    big = tmp_path / "overflowing.pth"
    torch.save(state, big)
    proc = run(cli_args(tmp_path, videos(clips), "random_weights=false", f"checkpoint_path={big}"))
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    lines = failed_lines(proc.stderr + proc.stdout)
    assert len(lines) == 2 and all("NaN or Inf" in line for line in lines), lines
    assert sorted(p.name for p in features_folder(tmp_path).glob("*.npy")) == []
    assert leftovers(tmp_path) == []
