"""The command line as a user types it, and config composition with Hydra.

Runs whose point is the extraction or the exit status of a real process start ``python main.py``
(slow ones are marked); messages and exit codes of refused settings are checked in process.
"""

import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from r21d_features.configs.schema import register_configs
from tests.conftest import REPO_ROOT, SAMPLES, run_here, run_main
from r21d_features.utils.video.ffmpeg import find_ffmpeg
from r21d_features.utils.video.windows import count_windows

STATS_LINE = re.compile(r"^max: -?\d+\.\d{8}; mean: -?\d+\.\d{8}; min: -?\d+\.\d{8}$", re.M)
PRED_ROW = re.compile(r"^ *-?\d+\.\d{3} \| \d\.\d{3} \| \S.*$")
R18 = "r2plus1d_18_16_kinetics"


@pytest.fixture
def ckpt(checkpoints):
    return f"checkpoint_path={checkpoints[R18]}"


def saved(out: Path, stem: str, ext: str = "npy", model: str = R18) -> Path:
    return out / "r21d" / model / f"{stem}_r21d.{ext}"


# ---------------------------------------------------------------- the command forms users know

@pytest.mark.slow
def test_list_of_paths_printed(ckpt, tmp_path):
    a, b = SAMPLES
    proc = run_main("feature_type=r21d", f"video_paths=[{a}, {b}]", "step_size=64", ckpt, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\nr21d\n") + proc.stdout.startswith("r21d\n") == 2
    assert len(STATS_LINE.findall(proc.stdout)) == 2
    assert "CUDA is not available" in proc.stderr  # default device cuda:0 falls back with a warning
    assert "2 done, 0 skipped, 0 failed" in proc.stderr
    assert not (tmp_path / "outputs").exists() and not list(tmp_path.iterdir())  # Hydra leaves nothing behind


@pytest.mark.slow
def test_single_path_with_predictions(ckpt):
    proc = run_main("feature_type=r21d", f"video_paths={SAMPLES[1]}", "show_pred=true", "step_size=40", ckpt)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("At frames (")]
    assert [lines[i] for i in starts] == [f"At frames ({s}, {s + 16})" for s in (0, 40, 80)]  # 132 frames
    for i in starts:
        assert lines[i + 1] == "  Logits | Prob. | Label "
        assert all(PRED_ROW.match(row) for row in lines[i + 2 : i + 7]), lines[i : i + 8]
        assert lines[i + 7] == ""


@pytest.mark.slow
def test_file_with_video_paths_and_relative_paths(ckpt, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"\n{SAMPLES[0]}\n\n   \n{SAMPLES[1].relative_to(REPO_ROOT)}\n")
    out = tmp_path / "feats"
    proc = run_main("feature_type=r21d", f"file_with_video_paths={listing}", "on_extraction=save_numpy",
                    f"output_path={out}", ckpt, "device=cpu", "stack_size=8", "step_size=50")
    assert proc.returncode == 0, proc.stderr
    assert np.load(saved(out, SAMPLES[0].stem)).shape == (4, 512)  # 158 frames: starts 0, 50, 100, 150
    assert np.load(saved(out, SAMPLES[1].stem)).shape == (3, 512)  # 132 frames: starts 0, 50, 100


@pytest.mark.slow
def test_ig65m_model_to_numpy(checkpoints, make_video, tmp_path):
    video = make_video("tiny clip.mp4", num_frames=20)
    model = "r2plus1d_34_8_ig65m_ft_kinetics"
    proc = run_main("feature_type=r21d", f"model_name={model}", "device=cpu", f"video_paths=[{video}]",
                    "on_extraction=save_numpy", "output_path=./feats", f"checkpoint_path={checkpoints[model]}",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    feats = np.load(saved(tmp_path / "feats", "tiny clip", model=model))
    assert feats.shape == (2, 512) and feats.dtype == np.float32


def ffmpeg_fps_frame_count(video: Path, fps: float, tmp_path: Path) -> int:
    """Frames that ffmpeg's fps filter gives, counted independently by decoding its output."""
    out = tmp_path / "independent.mkv"
    subprocess.run([find_ffmpeg(), "-v", "error", "-y", "-i", str(video), "-filter:v", f"fps=fps={fps}",
                    "-c:v", "ffv1", str(out)], check=True)
    import cv2

    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.grab():
        n += 1
    return n


@pytest.mark.slow
@pytest.mark.parametrize("keep", [False, True])
def test_extraction_fps_windows_and_tmp_files(ckpt, tmp_path, keep):
    video = SAMPLES[1]  # 132 frames at 25 fps
    n_frames = ffmpeg_fps_frame_count(video, 7, tmp_path)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    proc = run_main("feature_type=r21d", "stack_size=24", "step_size=8", "extraction_fps=7", "device=cpu",
                    f"video_paths={video}", "on_extraction=save_numpy", f"output_path={out}", f"tmp_path={tmp}",
                    f"keep_tmp_files={str(keep).lower()}", ckpt)
    assert proc.returncode == 0, proc.stderr
    assert 35 <= n_frames <= 40  # 5.28 s at 7 fps
    assert np.load(saved(out, video.stem)).shape == (count_windows(n_frames, 24, 8), 512)
    kept = tmp / "r21d" / R18 / f"{video.stem}_new_fps.mp4"
    assert kept.exists() == keep
    if not keep:
        assert not any(p.is_file() for p in tmp.rglob("*"))


# ---------------------------------------------------------------- sinks, skipping, failures

@pytest.mark.slow
def test_numpy_and_pickle_hold_the_same_features(ckpt, tmp_path, make_video):
    video = make_video("clip.mp4", num_frames=36)
    for sink, run in (("save_numpy", run_main), ("save_pickle", run_here)):  # one Python start is enough
        proc = run("feature_type=r21d", f"video_paths={video}", "device=cpu", f"on_extraction={sink}",
                   f"output_path={tmp_path}", ckpt)
        assert proc.returncode == 0, proc.stderr
    from_npy = np.load(saved(tmp_path, "clip", "npy"))
    with open(saved(tmp_path, "clip", "pkl"), "rb") as f:
        from_pkl = pickle.load(f)
    assert from_npy.shape == (2, 512) and from_npy.dtype == np.float32
    np.testing.assert_array_equal(from_npy, from_pkl)


@pytest.mark.slow
def test_existing_outputs_are_skipped(ckpt, tmp_path, make_video):
    video = make_video("clip.mp4", num_frames=20)
    args = ("feature_type=r21d", f"video_paths={video}", "device=cpu", "on_extraction=save_numpy",
            f"output_path={tmp_path}", ckpt)
    assert run_main(*args).returncode == 0
    target = saved(tmp_path, "clip")
    before = target.stat().st_mtime_ns
    proc = run_here(*args)
    assert proc.returncode == 0
    assert "skipping" in proc.stderr and "0 done, 1 skipped, 0 failed" in proc.stderr
    assert target.stat().st_mtime_ns == before


def test_bad_videos_do_not_stop_the_run(ckpt, tmp_path, make_video):
    good = make_video("good.mp4", num_frames=20)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out"
    proc = run_here("feature_type=r21d", f"video_paths=[{missing}, {good}, {corrupt}]", "device=cpu",
                    "on_extraction=save_numpy", f"output_path={out}", "batch_size=1", ckpt)
    assert proc.returncode == 1
    assert np.load(saved(out, "good")).shape == (1, 512)
    assert f"FAILED {missing}: file not found" in proc.stderr
    assert f"FAILED {corrupt}:" in proc.stderr
    assert "1 done, 0 skipped, 2 failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not saved(out, "missing").exists() and not saved(out, "corrupt").exists()


def test_duplicate_stems_refused_before_work(tmp_path, make_video):
    a = make_video("a/clip.mp4")
    b = make_video("b/clip.avi")
    proc = run_here("feature_type=r21d", f"video_paths=[{a}, {b}]", "random_weights=true", "device=cpu",
                    "on_extraction=save_numpy", f"output_path={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert "share the stem 'clip'" in proc.stderr and str(a) in proc.stderr and str(b) in proc.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- bad settings

@pytest.mark.parametrize(
    "override,needle",
    [
        ("stack_size=0", "stack_size=0"),
        ("step_size=-2", "step_size=-2"),
        ("extraction_fps=0", "extraction_fps=0"),
        ("model_name=r3d_18", "model_name='r3d_18' is unknown; allowed: r2plus1d_18_16_kinetics"),
        ("on_extraction=save_csv", "on_extraction='save_csv' is unknown; allowed: print, save_numpy, save_pickle"),
        ("tmp_path=./output", "output_path and tmp_path are both"),
        ("precision=int8", "precision='int8' is unknown"),
        ("batch_size=0", "batch_size=0"),
        ("stack_size=abc", "stack_size=abc"),
        ("stack_siz=4", "unknown key 'stack_siz' in 'stack_siz=4': did you mean 'stack_size'?"),
        ("+batchsize=4", "unknown key 'batchsize' in '+batchsize=4': did you mean 'batch_size'?"),
    ],
)
def test_bad_values_rejected_before_work_with_one_clear_line(override, needle, tmp_path):
    proc = run_here("feature_type=r21d", f"video_paths={SAMPLES[0]}", "random_weights=true", "device=cpu",
                    override, cwd=tmp_path)
    assert proc.returncode != 0
    assert needle in proc.stderr.splitlines()[0] or needle in proc.stderr.splitlines()[-1] or needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "r21d\n" not in proc.stdout  # nothing was extracted


def test_no_input_is_an_error(tmp_path):
    proc = run_here("feature_type=r21d", "random_weights=true", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 2 and "video_paths" in proc.stderr and "file_with_video_paths" in proc.stderr


def test_a_typo_in_a_key_ends_the_process_with_status_2_and_one_line(tmp_path):
    proc = run_main("feature_type=r21d", f"video_paths={SAMPLES[0]}", "stack_siz=4", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: unknown key 'stack_siz' in 'stack_siz=4': did you mean 'stack_size'? "
                           "`python main.py --help` lists the keys\n")
    assert list(tmp_path.iterdir()) == []


def test_help_lists_every_key():
    proc = run_main("--help")
    assert proc.returncode == 0
    for key in ("model_name", "stack_size", "step_size", "extraction_fps", "device", "video_paths",
                "file_with_video_paths", "on_extraction", "output_path", "tmp_path", "keep_tmp_files",
                "show_pred", "batch_size", "precision", "checkpoint_path"):
        assert key in proc.stdout


# ---------------------------------------------------------------- config composition (in process)

@pytest.fixture(scope="module")
def compose_cfg():
    register_configs()

    def make(*overrides):
        with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return make


def test_defaults_are_the_references(compose_cfg):
    cfg = compose_cfg("feature_type=r21d")
    assert cfg.feature_type == "r21d" and cfg.model_name == R18
    assert cfg.stack_size is None and cfg.step_size is None and cfg.extraction_fps is None
    assert cfg.device == "cuda:0" and cfg.on_extraction == "print"
    assert cfg.output_path == "./output" and cfg.tmp_path == "./tmp"
    assert cfg.keep_tmp_files is False and cfg.show_pred is False
    assert cfg.precision == "fp32" and cfg.random_weights is False


def test_overrides_are_typed(compose_cfg):
    cfg = compose_cfg("stack_size=24", "step_size=8", "extraction_fps=5", "video_paths=[a.mp4, b c.mp4]")
    assert cfg.stack_size == 24 and cfg.extraction_fps == 5.0 and list(cfg.video_paths) == ["a.mp4", "b c.mp4"]
    with pytest.raises(ConfigCompositionException):
        compose_cfg("stack_size=many")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("no_such_key=1")
