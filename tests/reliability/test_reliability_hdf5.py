"""save_hdf5 and video_root: one part file per writer, kill -9, resume, several workers, merge;
outputs mirroring the input tree.

Clips and the ``reference`` features (each clip extracted alone) come from conftest.py.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from r21d_features.main import run as run_cli
from tests.conftest import REPO_ROOT, run_main
from r21d_features.models.r21d import R21DExtractor
from tests.reliability.reliability_helpers import BATCH, MODEL, ONE_THREAD, STACK, STEP, cli_args, feature_folder, main_command
from r21d_features.utils.run.claims import ClaimBook
from r21d_features.utils.outputs.hdf5_merge import main as merge_main
from r21d_features.utils.outputs.hdf5_merge import merge_parts
from r21d_features.utils.outputs.hdf5_sink import MERGED_NAME, Hdf5Sink, complete_datasets, part_paths, part_writer, safe_host
from r21d_features.utils.outputs.sinks import FileSink, load_feature_file


def run_quietly(checkpoint: Path, out: Path, videos: list, **overrides) -> tuple[int, str]:
    settings = {"feature_type": "r21d", "device": "cpu", "stack_size": STACK, "step_size": STEP,
                "checkpoint_path": str(checkpoint), "output_path": str(out), "progress": False, "decode_workers": 1, "batch_size": BATCH,
                "video_paths": [str(v) for v in videos], "on_extraction": "save_hdf5", **overrides}
    err = io.StringIO()
    code = run_cli(settings, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


def read_all(folder: Path, *, while_written: bool = False) -> dict[str, np.ndarray]:
    """Every complete video of every part (and merged file) in ``folder``: {video id: features}.

    ``while_written``: a writer may be creating or flushing a part right now; a part that cannot be
    opened at this instant is left out (as the sink itself does) instead of failing the read.
    """
    out = {}
    for path in [*part_paths(folder), folder / MERGED_NAME]:
        if path.exists():
            try:
                with h5py.File(path, "r", locking=False) as f:
                    out.update({vid: ds[()] for vid, ds in complete_datasets(f)})
            except OSError:
                if not while_written:
                    raise
    return out


@pytest.fixture
def tree(tmp_path, good_clips) -> Path:
    """``root/cat/clip.mp4``, ``root/dog/clip.mp4`` (different clips, same name) and ``root/dog/x/y.mp4``."""
    root = tmp_path / "root"
    for rel, clip in (("cat/clip.mp4", good_clips[0]), ("dog/clip.mp4", good_clips[1]), ("dog/x/y.mp4", good_clips[2])):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / rel)
    return root


def test_hdf5_holds_the_numpy_sinks_arrays_keyed_by_mirrored_path(tmp_path, checkpoint_file, good_clips,
                                                                    reference, tree):
    videos = [tree / "cat/clip.mp4", tree / "dog/clip.mp4", tree / "dog/x/y.mp4"]
    # Same basename in two folders: refused without video_root, naming both paths.
    code, err = run_quietly(checkpoint_file, tmp_path / "h5", videos)
    assert code == 2 and "share the stem 'clip'" in err and "video_root" in err
    # An input outside video_root: one line, exit 2, nothing written.
    code, err = run_quietly(checkpoint_file, tmp_path / "h5", [*videos, good_clips[3]], video_root=str(tree))
    assert code == 2 and "is not inside video_root=" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "h5").exists()

    code, err = run_quietly(checkpoint_file, tmp_path / "h5", videos, video_root=str(tree), save_metadata=True)
    assert code == 0, err
    code, err = run_quietly(checkpoint_file, tmp_path / "npy", videos, video_root=str(tree),
                            on_extraction="save_numpy", save_metadata=True)
    assert code == 0, err
    npy = feature_folder(tmp_path / "npy")
    assert sorted(p.relative_to(npy).as_posix() for p in npy.rglob("*_r21d.npy")) == [
        "cat/clip_r21d.npy", "dog/clip_r21d.npy", "dog/x/y_r21d.npy"]
    assert int(np.load(npy / "dog/x/y_step_size.npy")) == STEP and int(np.load(npy / "cat/clip_stack_size.npy")) == STACK

    folder = feature_folder(tmp_path / "h5")
    (part,) = part_paths(folder)
    with h5py.File(part, "r") as f:  # as downstream localisation code reads it
        for vid, clip in (("cat/clip", good_clips[0]), ("dog/clip", good_clips[1]), ("dog/x/y", good_clips[2])):
            features = f[vid][()]
            assert features.dtype == np.float32
            np.testing.assert_array_equal(features, load_feature_file(npy / f"{vid}_r21d.npy"))
            np.testing.assert_array_equal(features, reference[clip.stem])
            attrs = f[vid].attrs
            assert (attrs["stack_size"], attrs["step_size"], attrs["model"], attrs["crops"]) == (
                STACK, STEP, "r2plus1d_18_16_kinetics", "center")
            assert attrs["fps"] == pytest.approx(25.0) and attrs["complete"] == 1
            np.testing.assert_array_equal(attrs["window_frames"], np.load(npy / f"{vid}_window_frames.npy"))

    # Resume: everything found complete, nothing written again; claims sit in the mirrored folders.
    code, err = run_quietly(checkpoint_file, tmp_path / "h5", videos, video_root=str(tree), save_metadata=True)
    assert code == 0 and "0 done, 3 skipped" in err, err
    assert part_paths(folder) == [part]
    sink = FileSink(tmp_path / "npy", "r21d", "r2plus1d_18_16_kinetics", "npy", 512, video_root=str(tree))
    claims = ClaimBook(sink.path_for)
    assert claims.lock_path(str(videos[0])) == npy / "cat" / ".clip_r21d.npy.lock"
    assert claims.lock_path(str(videos[0])) != claims.lock_path(str(videos[1]))
    claims.close()


def test_ten_crops_in_hdf5_and_a_crop_change_extracts_again(tmp_path, checkpoint_file, good_clips):
    out = tmp_path / "out"
    code, err = run_quietly(checkpoint_file, out, good_clips[:1], crops="ten")
    assert code == 0, err
    folder = feature_folder(out)
    assert read_all(folder)[good_clips[0].stem].shape == (1, 10, 512)
    code, err = run_quietly(checkpoint_file, out, good_clips[:1], crops="ten")
    assert "0 done, 1 skipped" in err, err
    # Made with other settings (crops): the run stops before any work, naming the difference ...
    code, err = run_quietly(checkpoint_file, out, good_clips[:1])
    assert code == 2 and "crops=ten (now center)" in err and "overwrite=true" in err, err
    # ... and overwrite=true extracts it again
    code, err = run_quietly(checkpoint_file, out, good_clips[:1], overwrite=True)
    assert code == 0 and "1 done, 0 skipped" in err, err
    assert merge_main([str(folder)]) == 0
    with h5py.File(folder / MERGED_NAME, "r") as f:  # the newest copy of a video wins
        assert f[good_clips[0].stem].shape == (1, 512) and f[good_clips[0].stem].attrs["crops"] == "center"


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from r21d_features.utils.outputs.hdf5_sink import Hdf5Sink
    sink = Hdf5Sink(sys.argv[1], "r21d", 512)
    for i in range(10_000):  # about 2 MB a video, so a kill often lands mid-write
        feats = np.full((1000, 512), i, np.float32)
        sink.write(f"/videos/v{i:05d}.mp4", {"r21d": feats, "fps": 25.0, "stack_size": 16, "step_size": 16})
""")


def test_kill_9_mid_write_never_damages_the_videos_already_in_a_part(tmp_path):
    folder = tmp_path / "parts"
    rng = np.random.default_rng(0)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=REPO_ROOT)
        try:
            deadline = time.monotonic() + 60
            while len(part_paths(folder)) <= attempt or part_paths(folder)[-1].stat().st_size < 4_000_000:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.05))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    parts = part_paths(folder)
    assert len(parts) == 3
    for part in parts:  # each opens, and every video marked complete holds exactly what was written
        with h5py.File(part, "r") as f:
            done = dict(complete_datasets(f))
            assert len(done) >= 1
            for vid, ds in done.items():
                assert ds.shape == (1000, 512) and np.all(ds[()] == int(vid[1:]))

    # Resume: a new sink knows what is done in any part and adds the rest to a part of its own.
    sink = Hdf5Sink(folder, "r21d", 512)
    done_ids = set(read_all(folder))
    assert all(sink.is_done(f"/videos/{vid}.mp4") for vid in done_ids)
    missing = [i for i in range(max(int(v[1:]) for v in done_ids) + 2) if f"v{i:05d}" not in done_ids]
    for i in missing:
        assert not sink.is_done(f"/videos/v{i:05d}.mp4")
        sink.write(f"/videos/v{i:05d}.mp4", {"r21d": np.full((1000, 512), i, np.float32), "fps": 25.0,
                                              "stack_size": 16, "step_size": 16})
    sink.close()
    result = merge_parts(folder, remove_parts=True)
    assert result.unreadable == [] and result.videos == len(done_ids | {f"v{i:05d}" for i in missing})
    assert part_paths(folder) == []
    with h5py.File(folder / MERGED_NAME, "r") as f:
        assert all(np.all(f[vid][()] == int(vid[1:])) for vid in f)


def test_a_damaged_part_is_set_aside_once_its_writer_is_gone_and_never_crashes(tmp_path):
    folder = tmp_path / "parts"
    sink = Hdf5Sink(folder, "r21d", 512)
    sink.write("a.mp4", {"r21d": np.ones((2, 512), np.float32), "fps": 25.0, "stack_size": 16, "step_size": 16})
    sink.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = folder / f"features.part-{safe_host()}-{int(dead.stdout)}-0.h5"
    orphan.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a part cut short by a crash
    alive = folder / f"features.part-{safe_host()}-{os.getpid()}-7.h5"  # a writer still running
    alive.write_bytes(b"junk")

    reader = Hdf5Sink(folder, "r21d", 512)
    assert reader.is_done("a.mp4") and not reader.is_done("b.mp4")
    assert not orphan.exists() and orphan.with_name(orphan.name + ".damaged").exists()
    assert alive.exists()  # not ours to judge while its writer may still be writing

    assert merge_main([str(folder)]) == 1  # the unreadable live part is reported; the rest is merged
    with h5py.File(folder / MERGED_NAME, "r") as f:
        assert list(f) == ["a"]


@pytest.mark.slow
def test_several_hdf5_workers_write_one_part_each_and_the_merge_holds_every_video_once(
        tmp_path, checkpoint_file, good_clips, reference):
    out = tmp_path / "out"
    clips = good_clips[:6]
    (tmp_path / "list.txt").write_text("".join(f"{c}\n" for c in clips))
    args = cli_args(checkpoint_file, out, f"file_with_video_paths={tmp_path / 'list.txt'}", "on_extraction=save_hdf5")
    # Two shards of one list into one folder at the same time: each worker surely has videos to
    # write (with one list and claims, which worker takes how many depends on who starts first).
    procs = [subprocess.Popen(main_command([*args, "num_shards=2", f"shard_index={i}"]), cwd=REPO_ROOT,
                              env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    folder = feature_folder(out)
    parts = part_paths(folder)
    assert len(parts) == 2  # one per worker: never two writers on one file
    assert {part_writer(part)[1] for part in parts} <= {p.pid for p in procs}
    per_part = []
    for part in parts:
        with h5py.File(part, "r") as f:
            per_part.append({vid for vid, _ in complete_datasets(f)})
    assert sum(len(s) for s in per_part) == len(clips)  # each video written once, by one worker
    merged = run_main_merge(folder)
    assert merged.returncode == 0 and f"merged {len(clips)} videos from {len(parts)} file(s)" in merged.stdout
    with h5py.File(folder / MERGED_NAME, "r") as f:
        assert sorted(f) == sorted(c.stem for c in clips)
        for clip in clips:
            np.testing.assert_array_equal(f[clip.stem][()], reference[clip.stem])


def run_main_merge(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r21d_features.utils.hdf5_merge", str(folder)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_kill_9_of_an_hdf5_run_then_the_same_command_finishes(tmp_path, checkpoint_file, good_clips):
    out = tmp_path / "out"
    folder = feature_folder(out)
    (tmp_path / "list.txt").write_text("".join(f"{c}\n" for c in good_clips))
    # batch_size=1: videos finish one after another (in bigger batches several tiny clips finish at once)
    args = cli_args(checkpoint_file, out, f"file_with_video_paths={tmp_path / 'list.txt'}", "on_extraction=save_hdf5",
                    "batch_size=1")
    proc = subprocess.Popen(main_command(args), cwd=REPO_ROOT, env={**os.environ, **ONE_THREAD},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(read_all(folder, while_written=True)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = read_all(folder)
    assert 2 <= len(before) < len(good_clips)
    rerun = run_main(*args, env=ONE_THREAD)
    assert rerun.returncode == 0 and f"{len(good_clips) - len(before)} done, {len(before)} skipped" in rerun.stderr
    assert merge_main([str(folder)]) == 0
    with h5py.File(folder / MERGED_NAME, "r") as f:
        alone = R21DExtractor(model_name=MODEL, device="cpu", stack_size=STACK, step_size=STEP, batch_size=1,
                              checkpoint_path=str(checkpoint_file), decode_workers=1)
        for clip in good_clips:  # the numbers of each clip extracted on its own, at the same batch size
            np.testing.assert_array_equal(f[clip.stem][()], alone.extract(clip)["r21d"])
