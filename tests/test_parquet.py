"""on_extraction=save_parquet: rows equal to save_numpy's arrays, the schema and its provenance, DuckDB and
Arrow datasets over the folder, resume, refusal of other settings, damaged parts, parts written whole
on a stop, claims kept while rows are held, workers sharing a folder, object stores, a missing pyarrow.

Short windows (4 frames every 16) keep the runs fast: these tests compare stores, not windows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from r21d_features.models.r21d import R21DExtractor
from r21d_features.utils.outputs.parquet_sink import (
    PROVENANCE_KEY, ParquetSink, part_paths, part_writer, read_features, safe_host,
)
from r21d_features.utils.outputs.provenance import read_entries
from r21d_features.utils.outputs.sinks import load_feature_file
from r21d_features.utils.run.claims import ClaimBook
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.run.signals import RunInterrupted, stop_on_signals
from tests.conftest import REPO_ROOT, S3_BUCKET, run_here

R18 = "r2plus1d_18_16_kinetics"
WINDOWS = ("stack_size=4", "step_size=16", "batch_size=4")
GUIDE = (REPO_ROOT / "docs" / "guides" / "outputs.md").read_text(encoding="utf-8")


def extract(ckpt: Path, *args: str):
    """The command line in this process, with short windows and fixed random weights."""
    return run_here("feature_type=r21d", "device=cpu", "progress=false", "decode_workers=1",
                    f"checkpoint_path={ckpt}", *WINDOWS, *args)


def listed(*names: object) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def guide_section(title: str) -> str:
    start = GUIDE.index(f"## {title}")
    end = GUIDE.find("\n## ", start + 3)
    return GUIDE[start: end if end >= 0 else None]


def all_rows(folder: Path | str) -> pa.Table:
    """Every row of the folder as the guide reads it with Arrow (the run report is not a table)."""
    return pads.dataset(os.fspath(folder), format="parquet", exclude_invalid_files=True).to_table()


def feats_of(n: int, shape: tuple[int, ...] = (512,), seed: int = 0) -> dict[str, np.ndarray]:
    """What the run hands a sink for a video of ``n`` windows (features and window spans)."""
    frames = np.stack([np.arange(n) * 16, np.arange(n) * 16 + 4], axis=1).astype(np.int64)
    return {"r21d": np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32),
            "fps": np.float64(25.0), "window_frames": frames, "window_times_s": frames / 25.0,
            "stack_size": np.int64(4), "step_size": np.int64(16)}


@pytest.fixture
def ckpt(checkpoints) -> Path:
    return checkpoints[R18]


@pytest.fixture
def tree(make_video) -> tuple[Path, list[Path]]:
    """``videos/cat/a.mp4``, ``videos/dog/a.mp4`` (same name, other folder) and ``videos/dog/b.avi``."""
    videos = [make_video("videos/cat/a.mp4", num_frames=20), make_video("videos/dog/a.mp4", num_frames=36, seed=1),
              make_video("videos/dog/b.avi", num_frames=17, height=64, width=80, seed=2)]
    return videos[0].parents[1], videos


def test_parquet_rows_equal_the_numpy_files_and_read_back_with_arrow_and_duckdb(tmp_path, ckpt, tree, monkeypatch):
    root, videos = tree
    common = (f"video_paths={listed(*videos)}", f"video_root={root}")
    proc = extract(ckpt, *common, "on_extraction=save_numpy", "save_metadata=true", f"output_path={tmp_path / 'npy'}")
    assert proc.returncode == 0, proc.stderr
    proc = extract(ckpt, *common, "on_extraction=save_parquet", f"output_path={tmp_path / 'feats'}")
    assert proc.returncode == 0 and "3 done" in proc.stderr, proc.stderr
    npy, folder = tmp_path / "npy" / "r21d" / R18, tmp_path / "feats" / "r21d" / R18
    (part,) = part_paths(folder)
    assert re.fullmatch(rf"features\.part-{re.escape(safe_host())}-{os.getpid()}-0\.parquet", part.name)
    assert not [p for p in (folder / ".claims").rglob("*") if p.is_file()]  # claims released once the part was written

    table = pq.read_table(part)
    assert table.schema.types == [pa.string(), pa.string(), pa.list_(pa.list_(pa.float32())),
                                  pa.list_(pa.int64()), pa.list_(pa.int64()), pa.list_(pa.float64()),
                                  pa.list_(pa.float64()), pa.float64(), pa.int32(), pa.int64(), pa.int64()]
    assert table.schema.names == ["video_id", "video_path", "features", "window_start_frame", "window_end_frame",
                                  "window_start_s", "window_end_s", "fps", "num_windows", "stack_size", "step_size"]
    meta = table.schema.metadata
    # The same entries a save_numpy record holds (what made the numbers), and the run's attributes.
    assert json.loads(meta[PROVENANCE_KEY]) == read_entries(npy / "cat" / "a_r21d.npy")
    assert json.loads(meta[b"r21d.attrs"]) == {"model": R18, "crops": "center", "feature_type": "r21d"}
    rows = {r["video_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["cat/a", "dog/a", "dog/b"]  # ids mirror the folders under video_root
    stored = read_features(folder)
    for vid, row in rows.items():
        want = load_feature_file(npy / f"{vid}_r21d.npy")
        assert np.array_equal(np.asarray(row["features"], dtype=np.float32), want)
        assert np.array_equal(stored[vid], want) and stored[vid].dtype == np.float32
        frames, times = np.load(npy / f"{vid}_window_frames.npy"), np.load(npy / f"{vid}_window_times_s.npy")
        assert np.array_equal(np.stack([row["window_start_frame"], row["window_end_frame"]], axis=1), frames)
        assert np.array_equal(np.stack([row["window_start_s"], row["window_end_s"]], axis=1), times)
        assert row["num_windows"] == len(want) > 0 and row["fps"] == float(np.load(npy / f"{vid}_fps.npy"))
        assert (row["stack_size"], row["step_size"]) == (4, 16) and row["video_path"] == str(root / f"{vid}{Path(row['video_path']).suffix}")
    assert all_rows(folder).num_rows == 3

    # The guide's DuckDB query, as written, from the folder it names.
    import duckdb

    sql = re.search(r"```sql\n(.*?)```", guide_section("Parquet"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    assert duckdb.sql(sql).fetchall() == sorted((vid, row["num_windows"]) for vid, row in rows.items())

    # Resume: every video found in the part, nothing written again.
    proc = extract(ckpt, *common, "on_extraction=save_parquet", f"output_path={tmp_path / 'feats'}")
    assert proc.returncode == 0 and "0 done, 3 skipped" in proc.stderr, proc.stderr
    assert part_paths(folder) == [part] and all_rows(folder).num_rows == 3
    # Other settings: refused before any work, as for every sink; nothing written.
    proc = extract(ckpt, *common, "on_extraction=save_parquet", f"output_path={tmp_path / 'feats'}", "step_size=8")
    assert proc.returncode == 2, proc.stderr
    assert "3 existing output(s)" in proc.stderr and "step_size=16 (now 8)" in proc.stderr
    assert "overwrite=true" in proc.stderr and part_paths(folder) == [part]


def test_the_guides_pandas_lines_read_the_folder(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    folder = tmp_path / "feats" / "r21d" / R18
    sink = ParquetSink(folder, "r21d", 512, video_root="/data")  # the guide names cat/000
    want = feats_of(3)
    sink.write("/data/cat/000.mp4", want)
    sink.close()
    snippet = re.search(r"```python\n(import [^\n]*pandas.*?)```", guide_section("Parquet"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 (our own docs)
    assert np.array_equal(scope["feats"], want["r21d"])


def test_rows_are_held_and_each_due_flush_writes_a_new_whole_part(tmp_path):
    folder = tmp_path / "out"
    sink = ParquetSink(folder, "r21d", (10, 512), attrs={"crops": "ten"}, part_videos=2)
    sink.with_provenance({"crops": "ten"})
    sink.write("v0.mp4", feats_of(2, (10, 512)))
    assert sink.pending() == ["v0.mp4"] and part_paths(folder) == []  # held: nothing on disk yet
    assert sink.is_done("v0.mp4")  # ... but this process has it: not extracted twice
    sink.write("v1.mp4", feats_of(3, (10, 512), seed=1))  # the second video: the part is due
    assert sink.pending() == [] and len(part_paths(folder)) == 1
    sink.write("v2.mp4", feats_of(0, (10, 512)))  # a video shorter than one window: no windows
    sink.close()
    sink.close()  # nothing held: no empty part
    parts = part_paths(folder)
    assert [p.name.rsplit("-", 1)[1] for p in parts] == ["0.parquet", "1.parquet"]
    assert pq.read_table(parts[0]).schema.field("features").type == pa.list_(pa.list_(pa.list_(pa.float32())))
    got = read_features(folder)
    assert got["v1"].shape == (3, 10, 512) and np.array_equal(got["v1"], feats_of(3, (10, 512), seed=1)["r21d"])
    assert got["v2"].shape == (0, 10, 512)

    # Another worker's sink on the folder finds every row; a row made otherwise is a stale difference.
    other = ParquetSink(folder, "r21d", (10, 512)).with_provenance({"crops": "ten"})
    assert all(other.is_done(v) for v in ("v0.mp4", "v1.mp4", "v2.mp4")) and not other.is_done("v3.mp4")
    changed = ParquetSink(folder, "r21d", (10, 512)).with_provenance({"crops": "five"})
    assert not changed.is_done("v0.mp4") and changed.stale_differences("v0.mp4") == ["crops=ten (now five)"]
    assert changed.stale_differences("v3.mp4") == []


def test_truncated_and_foreign_parts_are_skipped_and_a_dead_writers_part_is_set_aside(tmp_path):
    folder = tmp_path / "out"
    sink = ParquetSink(folder, "r21d", 512)
    sink.write("a.mp4", feats_of(2))
    sink.close()
    (part,) = part_paths(folder)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    truncated = folder / f"features.part-{safe_host()}-{int(dead.stdout)}-0.parquet"
    truncated.write_bytes(part.read_bytes()[:-100])  # its writer is gone: set aside, its videos extracted again
    foreign = folder / "features.part-otherhost-1-0.parquet"
    pq.write_table(pa.table({"video_id": ["b"]}), foreign)  # a Parquet file, but not ours: skipped, left alone
    (folder / "features.part-otherhost-2-0.parquet").write_bytes(b"not parquet at all")

    again = ParquetSink(folder, "r21d", 512)
    assert again.is_done("a.mp4") and not again.is_done("b.mp4")
    assert truncated.with_name(truncated.name + ".damaged").exists() and not truncated.exists()
    assert foreign.exists()
    again.write("b.mp4", feats_of(1))
    again.close()
    assert sorted(read_features(folder)) == ["a", "b"]


def test_a_stopped_run_writes_its_held_rows_and_keeps_their_claims_until_then(tmp_path, ckpt, make_video):
    videos = [str(make_video(f"v{i}.mp4", num_frames=20, seed=i)) for i in range(4)]
    folder = tmp_path / "out" / "r21d" / R18
    extractor = R21DExtractor(model_name=R18, device="cpu", stack_size=4, step_size=16, batch_size=4,
                              checkpoint_path=str(ckpt), decode_workers=1)
    sink = ParquetSink(folder, "r21d", 512).with_provenance(extractor.provenance())
    claims = ClaimBook(sink.claim_path)
    seen: list[str] = []

    def on_result(result) -> None:  # before each video is written
        seen.append(result.path)
        if len(seen) == 2:
            # The first video is done but held: its claim is still held, so no other worker takes it.
            assert sink.pending() == [videos[0]] and claims.lock_path(videos[0]).exists()
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or SLURM's time limit would

    with pytest.raises(RunInterrupted), stop_on_signals():
        run_extraction(extractor, videos, sink, on_result=on_result, progress=False, claims=claims)
    claims.close()
    written = {row["video_id"] for row in all_rows(folder).to_pylist()}
    assert {"v0", "v1"} <= written and len(written) < 4  # what was handed over is in the part
    assert not any(claims.lock_path(v).exists() for v in videos)
    # The same run again completes the rest, and no video has two rows.
    summary = run_extraction(extractor, videos, ParquetSink(folder, "r21d", 512).with_provenance(extractor.provenance()),
                             progress=False, claims=ClaimBook(sink.claim_path))
    assert summary.count("skipped") == len(written) and summary.count("done") == 4 - len(written)
    ids = [row["video_id"] for row in all_rows(folder).to_pylist()]
    assert sorted(ids) == ["v0", "v1", "v2", "v3"]


def test_a_missing_pyarrow_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from r21d_features.main import run_command\n"
            "sys.exit(run_command(['feature_type=r21d', 'video_paths=[a.mp4]', 'on_extraction=save_parquet', "
            "'random_weights=true']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ('error: on_extraction=save_parquet needs pyarrow: '
                                   'pip install pyarrow (or pip install ".[parquet]")')
    assert not any(tmp_path.iterdir())


def test_a_ray_actor_sends_a_held_videos_outcome_only_once_its_part_is_written(tmp_path, ckpt, make_video):
    import torch
    from r21d_features.models.r21d import R21DSettings
    from r21d_features.utils.run.ray_runner import HELD, ExtractionWorker

    videos = [str(make_video(f"v{i}.mp4", num_frames=20, seed=i)) for i in range(2)]
    folder = tmp_path / "out" / "r21d" / R18
    threads = torch.get_num_threads()
    settings = R21DSettings(model_name=R18, device="cpu", stack_size=4, step_size=16, batch_size=4,
                            checkpoint_path=str(ckpt), decode_workers=1, tmp_path=str(tmp_path / "tmp"))
    worker = ExtractionWorker(R21DExtractor, settings, "save_parquet", str(tmp_path / "out"), num_threads=1)
    try:
        assert worker.ready()["error"] is None
        outcomes: list = []
        part_when_done: list[int] = []  # parts on disk when each outcome saying done arrived
        deadline = time.monotonic() + 120
        close = True
        while sum(o.status == "done" for o in outcomes) < 2 and time.monotonic() < deadline:
            new = worker.exchange(videos if close else [], close=close, wait_s=1.0)
            close = False
            part_when_done += [len(part_paths(folder)) for o in new if o.status == "done"]
            outcomes += new
    finally:
        worker.stop()
        torch.set_num_threads(threads)
    # Both extracted and held back: the driver hears of them first (and may send more work), and
    # learns they are done only once the end of the session has written their part.
    assert [o.status for o in outcomes] == [HELD, HELD, "done", "done"] and part_when_done == [1, 1]
    assert sorted(read_features(folder)) == ["v0", "v1"]


@pytest.mark.slow
def test_two_workers_on_one_folder_write_every_video_once(tmp_path, ckpt, make_video):
    videos = [make_video(f"v{i}.mp4", num_frames=20, seed=i) for i in range(8)]
    out = tmp_path / "out"

    def worker(paths) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "main.py"), "feature_type=r21d", "device=cpu", "progress=false",
             "decode_workers=1", "on_extraction=save_parquet", f"checkpoint_path={ckpt}", *WINDOWS,
             f"video_paths={listed(*paths)}", f"output_path={out}"],
            cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Overlapping lists, in opposite orders: both meet every shared video.
    procs = [worker(videos[:6]), worker(list(reversed(videos[2:])))]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    folder = out / "r21d" / R18
    ids = [row["video_id"] for row in all_rows(folder).to_pylist()]
    assert sorted(ids) == [f"v{i}" for i in range(8)]  # every video once, no duplicate row
    assert {part_writer(p)[1] for p in part_paths(folder)} <= {p.pid for p in procs}


@pytest.mark.slow
def test_parquet_parts_in_an_object_store_resume_and_match_a_local_run(s3, tmp_path, ckpt, make_video):
    videos = [make_video("a.mp4", num_frames=40), make_video("b.avi", num_frames=36, seed=1)]
    prefix = f"s3://{S3_BUCKET}/runs/parquet"
    for out in (tmp_path / "local", prefix):
        proc = extract(ckpt, f"video_paths={listed(*videos)}", "on_extraction=save_parquet", f"output_path={out}")
        assert proc.returncode == 0 and "2 done" in proc.stderr, proc.stderr
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=S3_BUCKET, Prefix="runs/parquet/")["Contents"]]
    (key,) = [k for k in keys if k.endswith(".parquet")]
    assert key.startswith(f"runs/parquet/r21d/{R18}/features.part-")
    remote = pq.read_table(pa.BufferReader(s3.client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()))
    local = pq.read_table(part_paths(tmp_path / "local" / "r21d" / R18)[0])
    assert remote.select(["video_id", "features"]).equals(local.select(["video_id", "features"]))
    proc = extract(ckpt, f"video_paths={listed(*videos)}", "on_extraction=save_parquet", f"output_path={prefix}")
    assert proc.returncode == 0 and "0 done, 2 skipped" in proc.stderr, proc.stderr
    again = [o["Key"] for o in s3.client.list_objects_v2(Bucket=S3_BUCKET, Prefix="runs/parquet/")["Contents"]]
    assert [k for k in again if k.endswith(".parquet")] == [key]
