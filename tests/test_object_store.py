"""Videos and lists read from an object store, tested against a real S3 API server.

moto's standalone server runs on 127.0.0.1 and the product finds it the standard way,
through ``AWS_ENDPOINT_URL`` and the AWS credential variables; every feature array read from
the store must equal the one of a local run of the same file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from r21d_features.utils.core.object_store import ObjectPath
from r21d_features.utils.video.sources import LocalFile, ObjectFile, open_source
from tests.conftest import REPO_ROOT, S3_BUCKET as BUCKET, S3_SECRET as SECRET, SAMPLES, run_here
from tests.reference_oracle import FLAVOURS

R18 = "r2plus1d_18_16_kinetics"


@pytest.fixture
def ckpt(checkpoints):
    assert R18 in FLAVOURS
    return f"checkpoint_path={checkpoints[R18]}"


def features(out: Path, video_id: str) -> np.ndarray:
    return np.load(out / "r21d" / R18 / f"{video_id}_r21d.npy")


def listed(*names: object) -> str:
    """A Hydra list of names, each quoted (spaces, non-ASCII)."""
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def extract(*args: str, cwd: Path = REPO_ROOT):
    """The command line in this process; windows of 4 frames every 16 unless ``args`` set them
    (a quarter of the frames through the network: these tests compare stores, not windows)."""
    window = tuple(w for w, key in (("stack_size=4", "stack_size="), ("step_size=16", "step_size="))
                   if not any(a.startswith(key) for a in args))
    return run_here("feature_type=r21d", "device=cpu", "progress=false", "on_extraction=save_numpy", *window, *args,
                    cwd=cwd)


def test_object_urls_are_parsed_faithfully_and_never_opened_as_local_files():
    path = ObjectPath.from_url("s3://bkt/a dir/ü x.mp4")
    assert str(path) == "s3://bkt/a dir/ü x.mp4" and path.key == "bkt/a dir/ü x.mp4" and path.bucket == "bkt"
    assert str(path.parent / "y.npy") == "s3://bkt/a dir/y.npy"
    with pytest.raises(TypeError, match="object-store key, not a local file"):
        open(path, "rb")  # noqa: SIM115
    assert isinstance(open_source("s3://bkt/k.mp4"), ObjectFile)
    assert isinstance(open_source("GS://bkt/k.mp4"), ObjectFile) and isinstance(open_source("az://c/k.mp4"), ObjectFile)
    for local in ("odd:name.mp4", "./odd:name.mp4", "concat:a.mp4|b.mp4", "pipe:0", "ftp://host/x.mp4"):
        assert isinstance(open_source(local), LocalFile), local
    assert "https:// inputs are not read" in open_source("https://host/x.mp4").problem()
    for bad in ("s3://bkt", "s3://bkt/", "s3://bkt/dir/", "s3://bkt/a//b.mp4", "s3://bkt/a/../b.mp4"):
        assert open_source(bad).problem(), bad


def test_videos_in_the_store_give_the_features_of_the_same_local_files(s3, ckpt, tmp_path, make_video):
    videos = [make_video("a clip.mp4", num_frames=40), make_video("vidéo ü.avi", num_frames=36, seed=1),
              SAMPLES[0]]
    urls = [s3.upload(f"in/{i} {v.name}", v) for i, v in enumerate(videos)]
    local, remote = tmp_path / "local", tmp_path / "remote"
    proc = extract(f"video_paths={listed(*videos)}", f"output_path={local}", ckpt)
    assert proc.returncode == 0, proc.stderr
    proc = extract(f"video_paths={listed(*urls)}", f"output_path={remote}", ckpt)
    assert proc.returncode == 0, proc.stderr
    assert "3 done, 0 skipped, 0 failed" in proc.stderr
    for i, video in enumerate(videos):
        expected = features(local, video.stem)
        got = features(remote, f"{i} {video.stem}")
        assert got.dtype == np.float32 and got.shape == expected.shape and np.array_equal(got, expected)
    # Resume works the same: an unchanged rerun skips them all.
    proc = extract(f"video_paths={listed(*urls)}", f"output_path={remote}", ckpt)
    assert proc.returncode == 0 and "0 done, 3 skipped" in proc.stderr, proc.stderr


def test_extraction_fps_reencodes_an_object_read_by_ffmpeg_through_a_signed_url(s3, ckpt, tmp_path):
    url = s3.upload("fps/clip one.mp4", SAMPLES[1])
    local, remote = tmp_path / "local", tmp_path / "remote"
    common = ("extraction_fps=7", "stack_size=16", "step_size=8", f"tmp_path={tmp_path / 'tmp'}", ckpt)
    assert extract(f"video_paths={listed(SAMPLES[1])}", f"output_path={local}", *common).returncode == 0
    proc = extract(f"video_paths={listed(url)}", f"output_path={remote}", *common)
    assert proc.returncode == 0, proc.stderr
    expected, got = features(local, SAMPLES[1].stem), features(remote, "clip one")
    assert got.shape == expected.shape and np.array_equal(got, expected)


def test_a_bad_object_fails_alone_naming_its_key_or_bucket(s3, ckpt, tmp_path, make_video):
    good = s3.upload("mixed/good.mp4", make_video("good.mp4", num_frames=36))
    corrupt = s3.upload("mixed/corrupt.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    empty = s3.upload("mixed/empty.mp4", b"")
    missing = f"s3://{BUCKET}/mixed/missing.mp4"
    no_bucket = "s3://no-such-bucket-here/x.mp4"
    out = tmp_path / "out"
    proc = extract(f"video_paths={listed(good, corrupt, empty, missing, no_bucket)}", f"output_path={out}", ckpt)
    assert proc.returncode == 1
    assert "1 done, 0 skipped, 4 failed" in proc.stderr, proc.stderr
    assert features(out, "good").shape[1:] == (512,)
    text = proc.stdout + proc.stderr
    assert f"FAILED {corrupt}: cannot be opened as a video" in text
    assert f"FAILED {empty}: empty object (0 bytes)" in text
    assert f"FAILED {missing}: object not found: {missing}" in text
    assert f"FAILED {no_bucket}: bucket s3://no-such-bucket-here does not exist" in text and "AWS_ENDPOINT_URL" in text
    assert "Traceback" not in text


def test_the_list_and_video_root_may_be_in_the_store(s3, ckpt, tmp_path, make_video):
    a = s3.upload("tree/cat/000.mp4", make_video("a.mp4", num_frames=36))
    b = s3.upload("tree/dog/000.mp4", make_video("b.mp4", num_frames=36, seed=2))
    listing = s3.upload("lists/videos.txt", f"# two videos\n{a}\r\n\n{b}\n".encode())
    out = tmp_path / "out"
    proc = extract(f"file_with_video_paths={listing}", f"video_root=s3://{BUCKET}/tree", f"output_path={out}", ckpt)
    assert proc.returncode == 0, proc.stderr
    assert features(out, "cat/000").shape == features(out, "dog/000").shape
    assert not np.array_equal(features(out, "cat/000"), features(out, "dog/000"))
    proc = extract(f"file_with_video_paths=s3://{BUCKET}/lists/none.txt", f"output_path={out}", ckpt)
    assert proc.returncode == 2 and "no such object" in proc.stderr
    proc = extract(f"video_paths={listed(a)}", "video_root=s3://videos/elsewhere", f"output_path={out}", ckpt)
    assert proc.returncode == 2 and "is not inside video_root" in proc.stderr


def test_no_secret_reaches_the_console_the_report_or_the_outputs(s3, ckpt, tmp_path, make_video):
    other_secret = "Another-s3cr3t-From-Options-77"
    good = s3.upload("leak/good.mp4", make_video("good.mp4", num_frames=36))
    corrupt = s3.upload("leak/corrupt.mp4", b"not a video at all " * 64)
    out = tmp_path / "out"
    # The options repeat the environment's key pair, so the run works and both secrets are in play.
    options = f"storage_options={{key: AKIDTESTONLY, secret: {SECRET}, client_kwargs: {{}}}}"
    for fps in ("extraction_fps=null", "extraction_fps=5"):
        proc = extract(f"video_paths={listed(good, corrupt, f's3://{BUCKET}/leak/missing.mp4')}", f"output_path={out}",
                       "debug=true", "overwrite=true", fps, f"tmp_path={tmp_path / 'tmp'}", options, ckpt)
        assert proc.returncode == 1, proc.stderr
        text = proc.stdout + proc.stderr
        assert SECRET not in text and other_secret not in text
        assert "Signature=" not in text and "X-Amz-" not in text
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert SECRET.encode() not in data and b"Signature=" not in data, file


def test_local_names_with_colons_stay_local_files(ckpt, tmp_path, make_video):
    make_video("odd:name.mp4", num_frames=36)
    proc = extract("video_paths=[odd:name.mp4, ./odd:name.mp4]", "output_path=out", ckpt, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "r21d" / R18 / "odd:name_r21d.npy").is_file()


@pytest.mark.parametrize("args,needle", [
    (("video_paths=[https://example.com/a.mp4]",), "http(s):// inputs are not read"),
    (("video_paths=[s3://videos/a.mp4]", "output_path=az://videos/out"), "az:// is read only"),
    (("video_paths=[s3://videos/a.mp4]", "video_root=http://host/v"), "only s3://, gs:// and az:// URLs"),
    (("video_paths=[s3://videos/a.mp4]", "storage_options=5"), "storage_options must be a mapping"),
])
def test_urls_that_cannot_work_are_refused_before_any_work(tmp_path, args, needle):
    proc = extract(*args, "random_weights=true", cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # no folder named s3: or https: was made


def test_a_missing_store_package_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['s3fs'] = None\n"
            "from r21d_features.main import run_command\n"
            "sys.exit(run_command(['feature_type=r21d', 'video_paths=[s3://videos/a.mp4]', 'random_weights=true']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: s3:// needs s3fs: pip install ".[s3]" (or pip install s3fs)'


def test_a_tar_shard_in_the_store_is_read_in_place_and_matches_the_files(s3, ckpt, tmp_path, make_video):
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    videos = [make_video("a.mp4", num_frames=36), make_video("b.mp4", num_frames=36, seed=2)]
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        for video in videos:
            tar.add(video, arcname=f"clips/{video.name}")
            caption = tarfile.TarInfo(f"clips/{video.stem}.json")
            caption.size = 2
            tar.addfile(caption, io.BytesIO(b"{}"))
    s3.upload("shards/web-000.tar", shard.getvalue())
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert extract(f"video_paths={listed(*videos)}", f"output_path={local}", ckpt).returncode == 0
    proc = extract(f"video_paths=['s3://{BUCKET}/shards/web-{{000..001}}.tar']", f"output_path={remote}", ckpt)
    assert proc.returncode == 1 and "2 done, 0 skipped, 1 failed" in proc.stderr, proc.stderr
    assert f"FAILED s3://{BUCKET}/shards/web-001.tar: shard not found" in proc.stdout + proc.stderr
    for video in videos:
        assert np.array_equal(features(remote, f"web-000/clips/{video.stem}"), features(local, video.stem))
