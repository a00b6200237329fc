"""Tar shards as inputs: brace ranges, member keys and ids, hostile members, damaged shards,
and every feature array equal to extracting the same video as a plain file."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from r21d_features.utils.core.shard_names import MemberName, shown_name
from r21d_features.utils.outputs.output_paths import video_id
from r21d_features.utils.video.path_list import collect_video_paths
from r21d_features.utils.video.shards import ShardError, expand_braces, list_shard
from r21d_features.utils.video.sources import open_source
from tests.conftest import REPO_ROOT, run_here

WINDOWS = ("stack_size=4", "step_size=16")  # a quarter of the frames through the network: these tests compare inputs


def extract(*args: str):
    return run_here("feature_type=r21d", "device=cpu", "progress=false", "random_weights=true", "batch_size=1",
                    "on_extraction=save_numpy", *WINDOWS, *args)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


def make_shard(path: Path, members: dict[str, bytes], side_files: bool = True) -> Path:
    """A webdataset-style shard: each video with a .json and a .txt side file."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            add_bytes(tar, name, data)
            if side_files:
                key = name.split(".", 1)[0]
                add_bytes(tar, key + ".json", json.dumps({"key": key}).encode())
                add_bytes(tar, key + ".txt", b"a caption")
    return path


@pytest.fixture
def clips(make_video) -> dict[str, Path]:
    """Three short, different videos."""
    return {name: make_video(f"{name}.mp4", num_frames=32, seed=i) for i, name in enumerate(("c0", "c1", "c2"))}


def features(out: Path, vid: str) -> np.ndarray:
    return np.load(out / "r21d" / "r2plus1d_18_16_kinetics" / f"{vid}_r21d.npy")


# ---------------------------------------------------------------------------------- names
@pytest.mark.parametrize("pattern, names", [
    ("train-{000..002}.tar", ["train-000.tar", "train-001.tar", "train-002.tar"]),
    ("s-{8..11}.tar", ["s-8.tar", "s-9.tar", "s-10.tar", "s-11.tar"]),
    ("s-{09..11}.tar", ["s-09.tar", "s-10.tar", "s-11.tar"]),
    ("{a,b}-{0..1}.tar", ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]),
    ("s-{2..0}.tar", ["s-2.tar", "s-1.tar", "s-0.tar"]),
    ("plain.tar", ["plain.tar"]),
    ("odd{}-{x}.tar", ["odd{}-{x}.tar"]),
])
def test_brace_ranges_expand_like_webdataset(pattern, names):
    assert expand_braces(pattern) == names


def test_a_huge_brace_range_is_refused_as_a_typo():
    with pytest.raises(ShardError, match="more than"):
        expand_braces("s-{0..99999999}.tar")


def test_member_names_travel_as_one_string_and_read_as_shard_and_member():
    member = MemberName("/d/train-000.tar", "sub/clip001.mp4", 1536, 42)
    assert MemberName.parse(str(member)) == member
    assert member.key == "sub/clip001"
    assert shown_name(str(member)) == "/d/train-000.tar#sub/clip001.mp4"
    assert video_id(str(member)) == "train-000/sub/clip001"
    assert video_id(str(member), "/d") == "train-000/sub/clip001"
    assert video_id(str(MemberName("/d/a/train-000.tar", "x.y.mp4", 0, 1)), "/d") == "a/train-000/x"
    assert MemberName.parse("/d/plain.mp4") is None and MemberName.parse("a\x00b") is None


def test_a_shard_lists_its_videos_skips_side_files_and_fails_hostile_members_alone(tmp_path, clips):
    video = clips["c0"].read_bytes()
    shard = tmp_path / "train-000.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:
        add_bytes(tar, "good.mp4", video)
        add_bytes(tar, "good.json", b"{}")
        add_bytes(tar, "caption.txt", b"side file only")
        add_special(tar, "folder", tarfile.DIRTYPE)
        add_bytes(tar, "folder/nested.MP4", video)
        add_bytes(tar, "../escape.mp4", video)
        add_bytes(tar, "/abs/olute.mp4", video)
        add_bytes(tar, "a//b.mp4", video)
        add_bytes(tar, "x" * 300 + ".mp4", video)
        add_special(tar, "soft.mp4", tarfile.SYMTYPE, "/etc/passwd")
        add_special(tar, "hard.mp4", tarfile.LNKTYPE, "good.mp4")
        add_special(tar, "device.mp4", tarfile.CHRTYPE)
        add_special(tar, "pipe.mp4", tarfile.FIFOTYPE)
        add_bytes(tar, "good.avi", video)  # the key "good" again
        add_bytes(tar, "good.mp4", video)  # the same member name again
        add_bytes(tar, "._good.mp4", b"macOS metadata")
    listed: dict[str, MemberName] = {}
    for m in list_shard(str(shard)):
        listed.setdefault(m.member, m)  # the first of two members of one name
    assert set(listed) == {"good.mp4", "folder/nested.MP4", "../escape.mp4", "/abs/olute.mp4", "a//b.mp4",
                           "x" * 300 + ".mp4", "soft.mp4", "hard.mp4", "device.mp4", "pipe.mp4", "good.avi"}
    good = listed["good.mp4"]
    assert not good.problem and good.size == len(video)
    with open_source(str(good)).open() as f:
        assert f.read() == video  # the member's own bytes, read in place
    assert not listed["folder/nested.MP4"].problem and listed["folder/nested.MP4"].key == "folder/nested"
    expected = {"../escape.mp4": "'..' part", "/abs/olute.mp4": "absolute", "a//b.mp4": "empty",
                "x" * 300 + ".mp4": "too long", "soft.mp4": "symbolic link", "hard.mp4": "hard link",
                "device.mp4": "device", "pipe.mp4": "FIFO", "good.avi": "used by an earlier member ('good.mp4')"}
    for name, words in expected.items():
        assert words in listed[name].problem, name
    # The repeated "good.mp4" is listed once by its name; the second copy fails as a repeated key.
    repeats = [m for m in list_shard(str(shard)) if m.member == "good.mp4"]
    assert [bool(m.problem) for m in repeats] == [False, True]


def test_a_shard_that_cannot_be_listed_is_one_failing_entry(tmp_path):
    (tmp_path / "not-a-tar.tar").write_bytes(b"\x00garbage" * 100)
    assert [m.problem for m in list_shard(str(tmp_path / "missing.tar"))] == ["shard not found"]
    [entry] = list_shard(str(tmp_path / "not-a-tar.tar"))
    assert entry.member == "" and "not a tar file" in entry.problem


# ---------------------------------------------------------------------------------- runs
def test_shard_members_give_the_same_features_as_the_files(tmp_path, clips):
    shards = tmp_path / "shards"
    shards.mkdir()
    make_shard(shards / "train-000.tar", {"clip001.mp4": clips["c0"].read_bytes(), "clip002.mp4": clips["c1"].read_bytes()})
    make_shard(shards / "train-002.tar", {"sub/clip003.mp4": clips["c2"].read_bytes()})
    out, ref = tmp_path / "out", tmp_path / "ref"
    done = extract(f"video_paths=['{shards}/train-{{000..002}}.tar']", f"output_path={out}")
    files = extract(f"video_paths=[{clips['c0']},{clips['c1']},{clips['c2']}]", f"output_path={ref}")
    assert files.returncode == 0, files.stderr
    assert done.returncode == 1, done.stderr  # train-001.tar is missing: that one entry fails
    assert f"FAILED {shards}/train-001.tar: shard not found" in done.stdout + done.stderr
    for vid, clip in (("train-000/clip001", "c0"), ("train-000/clip002", "c1"), ("train-002/sub/clip003", "c2")):
        assert np.array_equal(features(out, vid), features(ref, clip)), vid
    report = [json.loads(line) for line in (out / "r21d/r2plus1d_18_16_kinetics/run_report.jsonl").read_text().splitlines()]
    assert {(r["path"], r["status"]) for r in report} == {
        (f"{shards}/train-000.tar#clip001.mp4", "done"), (f"{shards}/train-000.tar#clip002.mp4", "done"),
        (f"{shards}/train-002.tar#sub/clip003.mp4", "done"), (f"{shards}/train-001.tar", "failed")}
    again = extract(f"video_paths=['{shards}/train-{{000..002}}.tar']", f"output_path={out}")
    assert "3 skipped" in again.stdout + again.stderr, again.stdout + again.stderr


def test_hostile_and_damaged_members_fail_alone_and_nothing_leaves_the_output_folder(tmp_path, clips):
    video = clips["c0"].read_bytes()
    shard = tmp_path / "in" / "evil.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:
        add_bytes(tar, "ok.mp4", video)
        add_bytes(tar, "../../escape.mp4", video)
        add_bytes(tar, "/tmp/abs.mp4", video)
        add_special(tar, "link.mp4", tarfile.SYMTYPE, "/etc/passwd")
        add_bytes(tar, "corrupt.mp4", os.urandom(5000))
        add_bytes(tar, "ok.webm", video)
        add_bytes(tar, "last.mp4", clips["c1"].read_bytes())
    out = tmp_path / "out"
    result = extract(f"video_paths=[{shard}]", f"output_path={out}")
    text = result.stdout + result.stderr
    assert result.returncode == 1
    for member in ("../../escape.mp4", "/tmp/abs.mp4", "link.mp4", "corrupt.mp4", "ok.webm"):
        assert f"FAILED {shard}#{member}: " in text, member
    folder = out / "r21d" / "r2plus1d_18_16_kinetics"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert written == ["r21d/r2plus1d_18_16_kinetics/evil/last_r21d.npy", "r21d/r2plus1d_18_16_kinetics/evil/ok_r21d.npy",
                       "r21d/r2plus1d_18_16_kinetics/run_report.jsonl"]
    assert not (tmp_path / "escape.mp4").exists() and not list(tmp_path.glob("escape*"))
    assert features(out, "evil/ok").shape[1:] == (512,) and folder.is_dir()


def test_a_truncated_shard_extracts_the_members_before_the_cut(tmp_path, clips):
    first, second = clips["c0"].read_bytes(), clips["c1"].read_bytes()
    whole = make_shard(tmp_path / "whole.tar", {"a.mp4": first, "b.mp4": second, "c.mp4": first}, side_files=False)
    members = {m.member: m for m in list_shard(str(whole))}
    data = whole.read_bytes()
    cut_in_data = tmp_path / "cut-data.tar"  # inside b.mp4's bytes
    cut_in_data.write_bytes(data[:members["b.mp4"].offset + 1000])
    cut_in_header = tmp_path / "cut-header.tar"  # inside c.mp4's header
    cut_in_header.write_bytes(data[:members["c.mp4"].offset - 300])
    out = tmp_path / "out"
    result = extract(f"video_paths=[{cut_in_data},{cut_in_header}]", f"output_path={out}")
    text = result.stdout + result.stderr
    assert f"FAILED {cut_in_data}#b.mp4: the shard ends inside this member" in text
    assert f"FAILED {cut_in_header}: the shard is cut short after 2 members" in text
    assert text.count("FAILED") == 2, text
    for vid in ("cut-data/a", "cut-header/a", "cut-header/b"):
        assert features(out, vid).shape[1:] == (512,), vid
    assert np.array_equal(features(out, "cut-header/b"), features(out, "cut-data/a")) is False


def test_a_list_file_names_shards_by_range_and_members_are_named_by_video_root(tmp_path, clips):
    root = tmp_path / "data"
    (root / "part").mkdir(parents=True)
    make_shard(root / "part" / "s-0.tar", {"x.mp4": clips["c0"].read_bytes()})
    make_shard(root / "part" / "s-1.tar", {"x.mp4": clips["c1"].read_bytes()})
    listing = tmp_path / "list.txt"
    listing.write_text(f"# shards\n{root}/part/s-{{0..1}}.tar\n{clips['c2']}\n")
    paths = list(collect_video_paths(None, str(listing)))
    assert [shown_name(p) for p in paths] == [f"{root}/part/s-0.tar#x.mp4", f"{root}/part/s-1.tar#x.mp4", str(clips["c2"])]
    out = tmp_path / "out"
    result = extract(f"file_with_video_paths={listing}", f"video_root={tmp_path}", f"output_path={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.relative_to(out / "r21d/r2plus1d_18_16_kinetics").as_posix() for p in out.rglob("*.npy")} == {
        "data/part/s-0/x_r21d.npy", "data/part/s-1/x_r21d.npy", "c2_r21d.npy"}


def test_members_are_re_encoded_in_place_saved_as_hdf5_groups_and_refused_by_opencv(tmp_path, clips):
    h5py = pytest.importorskip("h5py")
    make_shard(tmp_path / "train-000.tar", {"clip001.mp4": clips["c0"].read_bytes()})
    shard, out, ref = tmp_path / "train-000.tar", tmp_path / "out", tmp_path / "ref"
    fps = ("extraction_fps=10", f"tmp_path={tmp_path / 'tmp'}")
    assert extract(f"video_paths=[{clips['c0']}]", f"output_path={ref}", *fps).returncode == 0
    result = extract(f"video_paths=[{shard}]", f"output_path={out}", *fps)
    assert result.returncode == 0, result.stdout + result.stderr
    assert np.array_equal(features(out, "train-000/clip001"), features(ref, "c0"))  # ffmpeg read the member in place
    hdf5 = extract(f"video_paths=[{shard}]", f"output_path={tmp_path / 'h5'}", "on_extraction=save_hdf5")
    assert hdf5.returncode == 0, hdf5.stderr
    [part] = (tmp_path / "h5" / "r21d" / "r2plus1d_18_16_kinetics").glob("features.part-*.h5")
    with h5py.File(part, "r") as f:
        assert list(f) == ["train-000"] and f["train-000/clip001"].shape[1:] == (512,)
    opencv = extract(f"video_paths=[{shard}]", f"output_path={tmp_path / 'cv'}", "decoder=opencv")
    assert opencv.returncode == 1 and f"FAILED {shard}#clip001.mp4: " in opencv.stdout + opencv.stderr


def test_two_shards_of_one_stem_in_different_folders_are_refused_before_any_work(tmp_path, clips):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        make_shard(tmp_path / folder / "train-000.tar", {"clip.mp4": clips["c0"].read_bytes()})
    result = extract(f"video_paths=[{tmp_path}/a/train-000.tar,{tmp_path}/b/train-000.tar]",
                     f"output_path={tmp_path / 'out'}")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert (f"inputs '{tmp_path}/a/train-000.tar#clip.mp4', '{tmp_path}/b/train-000.tar#clip.mp4' share the stem "
            "'train-000/clip'") in result.stderr, result.stderr
    mirrored = extract(f"video_paths=[{tmp_path}/a/train-000.tar,{tmp_path}/b/train-000.tar]",
                       f"output_path={tmp_path / 'out'}", f"video_root={tmp_path}")
    assert mirrored.returncode == 0, mirrored.stderr
    assert (tmp_path / "out/r21d/r2plus1d_18_16_kinetics/b/train-000/clip_r21d.npy").is_file()


def test_shard_members_become_parquet_rows_named_by_shard_and_key(tmp_path, clips, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    make_shard(tmp_path / "train-000.tar", {"clip001.mp4": clips["c0"].read_bytes(), "b/clip002.mp4": clips["c1"].read_bytes()})
    out, ref = tmp_path / "feats", tmp_path / "ref"
    assert extract(f"video_paths=[{clips['c0']},{clips['c1']}]", f"output_path={ref}").returncode == 0
    unquoted = extract(f"video_paths=[{tmp_path}/train-{{000..000}}.tar]", f"output_path={out}")
    assert unquoted.returncode == 2 and "quote a list item holding spaces, commas or braces" in unquoted.stderr
    result = extract(f"video_paths=['{tmp_path}/train-{{000..000}}.tar']", f"output_path={out}", "on_extraction=save_parquet")
    assert result.returncode == 0, result.stdout + result.stderr
    folder = out / "r21d" / "r2plus1d_18_16_kinetics"
    rows = duckdb.sql(f"SELECT video_id, video_path, features FROM read_parquet('{folder}/*.parquet') "
                      "ORDER BY video_id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("train-000/b/clip002", f"{tmp_path}/train-000.tar#b/clip002.mp4"),
                                             ("train-000/clip001", f"{tmp_path}/train-000.tar#clip001.mp4")]
    for (_, _, feats), clip in zip(rows, ("c1", "c0")):
        assert np.array_equal(np.asarray(feats, dtype=np.float32), features(ref, clip))

    # The guide's DuckDB query and pandas lines, as written, on this folder.
    guide = (REPO_ROOT / "docs" / "guides" / "shards-and-tables.md").read_text()
    sql = re.search(r"```sql\n(.*?)```", guide, re.S).group(1)
    snippet = re.search(r"```python\n(import [^\n]*pandas.*?)```", guide, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    assert duckdb.sql(sql).fetchall() == [("train-000", 2, 2 * features(ref, "c0").shape[0])]
    pytest.importorskip("pandas")
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 (our own docs)
    assert np.array_equal(scope["feats"], features(ref, "c0"))
