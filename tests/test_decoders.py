"""The PyAV decoder against the oracle (PyAV + swscale rgb24, whole frames) on many codecs and layouts,
and its guarantees: local files only, edit lists honoured, cover art is not video, growing frames refused."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from r21d_features.models.r21d import R21DExtractor
from r21d_features.models.r21d.extractor import ConfigError
from tests.helpers import rel_err
from tests.reference_oracle import decode_rgb24, reference
R18 = "r2plus1d_18_16_kinetics"
from r21d_features.utils.video.decoders import VideoDecodeError, open_video
from r21d_features.utils.video.decoders.yuv import YuvForm, _lookup_numpy, _lookup_torch, matches_swscale, rgb_tables, yuv_taps_to_rgb, yuv_to_rgb_numpy

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
STACK = 4


@functools.lru_cache(maxsize=1)
def encoders() -> str:
    return subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def encode(path: Path, codec_args: tuple[str, ...], size: str = "64x48", frames: int = 8, rate: int = 25,
           extra: tuple[str, ...] = ()) -> Path:
    """A ``testsrc2`` clip (colourful, moving) encoded with ``codec_args``; skips if the encoder is absent."""
    encoder = codec_args[codec_args.index("-c:v") + 1]
    if f" {encoder} " not in encoders():
        pytest.skip(f"this ffmpeg ({FFMPEG}) has no {encoder} encoder")
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-frames:v", str(frames), *codec_args, *extra,
           str(path))
    return path


@pytest.fixture(scope="module")
def oracle_net(checkpoints) -> Path:
    """The oracle's weights: the checkpoint it loads into its own network."""
    return checkpoints[R18]


@pytest.fixture(scope="module")
def extractor(checkpoints) -> R21DExtractor:
    return R21DExtractor(R18, device="cpu", checkpoint_path=str(checkpoints[R18]), stack_size=STACK, step_size=STACK,
                         batch_size=2)


def assert_matches_oracle(extractor, oracle_net, path: Path, tol: float, min_windows: int = 1) -> np.ndarray:
    got = extractor.extract_video(path)
    oracle = reference(R18, oracle_net, path, STACK, STACK)
    want = oracle.features
    assert got.features.shape == want.shape and want.shape[0] >= min_windows
    assert got.num_frames == oracle.num_frames
    assert rel_err(got.features, want) <= tol
    return got.features


X264 = ("-c:v", "libx264", "-preset", "ultrafast")
CASES = {  # name -> (codec args, size, tolerance): 1e-4 for 8-bit 4:2:0, 2e-3 otherwise
    "h264": (X264 + ("-pix_fmt", "yuv420p"), "64x48", 1e-4),
    "av1": (("-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p"), "64x48", 1e-4),
    "vp9": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p"), "64x48", 1e-4),
    "hevc": (("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none", "-pix_fmt", "yuv420p"),
             "64x48", 1e-4),
    "mpeg4": (("-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"), "64x48", 1e-4),
    "mjpeg_full_range": (("-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"), "64x48", 1e-4),
    "bt709_tagged": (X264 + ("-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "tv"), "64x48", 1e-4),
    "full_range_tagged": (X264 + ("-pix_fmt", "yuv420p", "-color_range", "pc"), "64x48", 1e-4),
    "odd_97x31": (X264 + ("-pix_fmt", "yuv420p",), "98x32", 1e-4),  # resized below: x264 needs even sizes
    "yuv422": (X264 + ("-pix_fmt", "yuv422p"), "64x48", 2e-3),
    "yuv444": (X264 + ("-pix_fmt", "yuv444p"), "97x31", 2e-3),
    "ten_bit": (X264 + ("-pix_fmt", "yuv420p10le"), "64x48", 2e-3),
    "gray": (("-c:v", "ffv1", "-pix_fmt", "gray"), "64x48", 2e-3),
    "rgb": (("-c:v", "ffv1", "-pix_fmt", "bgr0"), "64x48", 2e-3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_codec_and_pixel_format_match_the_oracle(tmp_path, extractor, oracle_net, case):
    codec_args, size, tol = CASES[case]
    suffix = ".mkv" if "ffv1" in codec_args else ".mp4"
    extra = ("-vf", "scale=97:31") if case == "odd_97x31" else ()
    if case == "odd_97x31":  # 4:2:0 with odd sizes: libx264 refuses them, mpeg4 does not
        codec_args = ("-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p")
    path = encode(tmp_path / f"{case}{suffix}", codec_args, size=size, extra=extra)
    assert_matches_oracle(extractor, oracle_net, path, tol)


def test_common_frames_are_gathered_as_yuv_and_the_rest_as_rgb(tmp_path):
    plain = encode(tmp_path / "plain.mp4", X264 + ("-pix_fmt", "yuv420p"))
    ten_bit = encode(tmp_path / "ten.mp4", X264 + ("-pix_fmt", "yuv420p10le"))
    assert {p.yuv for _, p in open_video(plain).frames()} == {YuvForm(1, 2, False)}
    assert {p.yuv for _, p in open_video(ten_bit).frames()} == {None}


def test_variable_frame_rate_matches_the_oracle(tmp_path, extractor, oracle_net):
    path = encode(tmp_path / "vfr.mp4", X264 + ("-pix_fmt", "yuv420p"), frames=12,
                  extra=("-vf", "setpts='if(lt(N,6),N*2,12+(N-6)/2)/25/TB'", "-fps_mode", "vfr"))
    assert_matches_oracle(extractor, oracle_net, path, 1e-4, min_windows=3)


@pytest.mark.parametrize("how", ["cut", "negative_timestamps"])
def test_edit_list_frames_are_the_ones_ffmpeg_presents(tmp_path, extractor, oracle_net, how):
    source = encode(tmp_path / "source.mp4", X264 + ("-pix_fmt", "yuv420p", "-g", "10"), frames=40)
    edited = tmp_path / f"{how}.mp4"
    if how == "cut":  # starts between keyframes: the edit list hides the frames before 0.5 s
        ffmpeg("-ss", "0.5", "-i", str(source), "-t", "0.8", "-c", "copy", str(edited))
    else:
        ffmpeg("-i", str(source), "-c", "copy", "-output_ts_offset", "-0.4", str(edited))
    with av.open(str(edited)) as container:
        samples = container.streams.video[0].frames
    presented = len(decode_rgb24(edited))
    assert presented < samples  # the container holds more samples than FFmpeg presents
    result = extractor.extract_video(edited)
    assert result.num_frames == presented and result.warnings == []
    assert_matches_oracle(extractor, oracle_net, edited, 1e-4)


def test_display_rotation_is_ignored_by_default_and_applied_on_request(tmp_path, checkpoints):
    source = encode(tmp_path / "source.mp4", X264 + ("-pix_fmt", "yuv420p"), size="64x48")
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(source), "-c", "copy", str(rotated))
    stored = [p for _, p in open_video(rotated).frames()]
    assert (stored[0].height, stored[0].width) == (48, 64)
    upright = [p.arrays[0] for _, p in open_video(rotated, apply_rotation=True).frames()]
    by_opencv = [p.rgb() for _, p in open_video(rotated, "opencv", apply_rotation=True).frames()]
    assert upright[0].shape == by_opencv[0].shape == (64, 48, 3)
    assert np.abs(upright[0].astype(int) - by_opencv[0]).mean() < 3  # same turn (OpenCV's own YUV->RGB rounding)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.path)
        self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    """A loopback HTTP server (127.0.0.1 only) that records every request it gets."""
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler.requests
    server.shutdown()
    server.server_close()


def test_names_that_look_like_protocols_are_read_as_local_files(tmp_path, monkeypatch, http_server):
    port, requests = http_server
    monkeypatch.chdir(tmp_path)
    encode(tmp_path / "a.mp4", X264 + ("-pix_fmt", "yuv420p"), frames=10)
    encode(tmp_path / "b.mp4", X264 + ("-pix_fmt", "yuv420p"), frames=7)
    local = encode(tmp_path / "local.mp4", X264 + ("-pix_fmt", "yuv420p"), frames=5)
    (tmp_path / "http:" / f"127.0.0.1:{port}").mkdir(parents=True)
    names = ["concat:a.mp4|b.mp4", "pipe:0", "file:x.mp4", "cam:1.mp4", f"http://127.0.0.1:{port}/clip.mp4"]
    for name in names:
        shutil.copy(local, tmp_path / name)
        frames = [p.arrays[0].copy() for _, p in open_video(name).frames()]
        assert len(frames) == 5, name  # the 5-frame local file, not a.mp4 (10), a + b (17) or stdin
    assert requests == []


def test_playlist_pointing_at_the_network_is_not_followed(tmp_path, http_server):
    port, requests = http_server
    playlist = tmp_path / "playlist.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n"
                        f"http://127.0.0.1:{port}/segment.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(VideoDecodeError):
        for _ in open_video(playlist).frames():
            pass
    assert requests == []


def test_cover_art_is_not_a_video(tmp_path, extractor):
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", str(cover))
    song = tmp_path / "song.mp3"
    if " libmp3lame " not in encoders():
        pytest.skip("this ffmpeg has no mp3 encoder")
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0", "-map", "1", "-c:a", "libmp3lame",
           "-c:v", "png", "-disposition:v", "attached_pic", str(song))
    with pytest.raises(VideoDecodeError, match="no video stream"):
        extractor.extract_video(song)


def test_frames_growing_past_max_frame_pixels_are_refused(tmp_path, checkpoints):
    small = encode(tmp_path / "small.ts", X264 + ("-pix_fmt", "yuv420p"), size="64x48", frames=6)
    big = encode(tmp_path / "big.ts", X264 + ("-pix_fmt", "yuv420p"), size="160x120", frames=6)
    growing = tmp_path / "growing.ts"
    ffmpeg("-i", f"concat:{small}|{big}", "-c", "copy", str(growing))
    extractor = R21DExtractor(R18, device="cpu", checkpoint_path=str(checkpoints[R18]), stack_size=STACK,
                              max_frame_pixels=100 * 100)
    with pytest.raises(VideoDecodeError, match=r"frame size 160x120 \(19200 pixels\) is over max_frame_pixels=10000"):
        extractor.extract_video(growing)


def test_unknown_decoder_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"decoder='ffmpeg' is unknown; allowed: pyav, opencv"):
        R21DExtractor(R18, device="cpu", random_weights=True, decoder="ffmpeg")


@pytest.mark.parametrize("pix_fmt,height", [("yuv420p", 48), ("yuvj420p", 32), ("yuv422p", 48)])
@pytest.mark.parametrize("colorspace,color_range", [(2, 1), (1, 1), (1, 2), (5, 0), (9, 1)])
def test_yuv_model_is_swscale_to_the_bit(pix_fmt, height, colorspace, color_range):
    assert matches_swscale(pix_fmt, 62, height, colorspace, color_range)


def test_odd_heights_are_left_to_swscale():
    # swscale's unscaled shortcut needs an even height; otherwise it interpolates chroma.
    assert not matches_swscale("yuv420p", 97, 31, 2, 1)


def test_device_conversion_equals_the_model_on_every_path():
    taps = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    for form in [YuvForm(1, 2, False), YuvForm(1, 1, True), YuvForm(0, 9, False)]:
        want = yuv_to_rgb_numpy(taps[..., 0], taps[..., 1], taps[..., 2], form)
        assert np.array_equal(yuv_taps_to_rgb(torch.from_numpy(taps), form).numpy(), want)
        assert np.array_equal(_lookup_torch(torch.from_numpy(taps), form).numpy(), want)
        assert np.array_equal(_lookup_numpy(taps, rgb_tables(form)), want)  # CPU fallback (no swscale match)
