"""The CPU's one-pass preprocessing (models/r21d/host_blend.py) equals the device path to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r21d_features.models.r21d import R21DExtractor
from r21d_features.models.r21d.host_blend import HostBlender
from r21d_features.models.r21d.preprocess import blend_taps, crop_taps, gather_planes
from r21d_features.models.r21d.zoo import get_record
from r21d_features.utils.video.decoders import Planes
from r21d_features.utils.video.decoders.yuv import YuvForm, yuv_taps_to_rgb

SPEC = get_record("r2plus1d_18_16_kinetics").preprocessing
FORMS = [None, "bgr", YuvForm(1, 2, False), YuvForm(1, 1, False), YuvForm(0, 1, True), YuvForm(1, 5, True)]


def random_planes(rng: np.random.Generator, height: int, width: int, form: YuvForm | str | None) -> Planes:
    if form in (None, "bgr"):
        return Planes((rng.integers(0, 256, (height, width, 3), dtype=np.uint8),), bgr=form == "bgr")
    chroma_h = -(-height // 2) if form.chroma_vshift else height
    # Luma as a view with a longer line, as decoders hand planes out.
    luma = rng.integers(0, 256, (height, width + 32), dtype=np.uint8)[:, :width]
    u, v = (rng.integers(0, 256, (chroma_h, -(-width // 2)), dtype=np.uint8) for _ in range(2))
    return Planes((luma, u, v), form)


def device_path(planes: Planes, taps) -> np.ndarray:  # noqa: ANN001
    """What a GPU computes, run on the CPU: gather taps, YUV -> RGB on them, blend."""
    if planes.bgr:  # the whole frame turned to RGB first, as the old path did
        planes = Planes((np.ascontiguousarray(planes.rgb()),))
    gathered = torch.from_numpy(gather_planes(planes, taps))[None]
    if planes.yuv is not None:
        gathered = yuv_taps_to_rgb(gathered, planes.yuv)
    return blend_taps(gathered, taps).numpy()[0]


@pytest.mark.parametrize("height,width", [(360, 640), (97, 130), (1080, 1920), (128, 171), (64, 80), (31, 97)])
def test_host_blend_is_the_device_path_to_the_bit(height, width):
    rng = np.random.default_rng(height * 10007 + width)
    for form in FORMS:
        for region in (None, (0, 0, 128, 171), (8, 29, 112, 112)):
            taps = crop_taps(height, width, SPEC, region)
            planes = random_planes(rng, height, width, form)
            blender = HostBlender(taps)
            got = np.full(blender.region_hwc, np.nan, np.float32)
            blender.blend_into(planes, got)
            assert np.array_equal(got, device_path(planes, taps)), (height, width, form, region)


def test_host_blend_refuses_a_buffer_of_another_shape():
    blender = HostBlender(crop_taps(360, 640, SPEC))
    with pytest.raises(ValueError, match=r"expected float32 \(112, 112, 3\)"):
        blender.blend_into(random_planes(np.random.default_rng(0), 360, 640, None), np.empty((3, 112, 112), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("crops", ["center", "ten"])
def test_cpu_run_equals_the_gpu_chunk_path_run_on_the_cpu(checkpoints, tmp_path, crops):
    """The same extractor with the GPU's chunk path (taps, finished in the model thread) gives the
    same features bit for bit, through the cross-video batcher, on YUV (4:2:0, 4:2:2) and RGB videos."""
    from tests.helpers import synthetic_frames, write_video
    from tests.reference_oracle import GRAY_8BIT, LOSSLESS_RGB, write_video as ffmpeg_video

    x264_422 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv422p")
    videos = [str(write_video(tmp_path / "a.mp4", synthetic_frames(20, 90, 160, seed=1))),
              str(ffmpeg_video(tmp_path / "b.mkv", synthetic_frames(13, 67, 51, seed=2), codec_args=LOSSLESS_RGB)),
              str(ffmpeg_video(tmp_path / "c.mp4", synthetic_frames(11, 48, 64, seed=3), codec_args=x264_422)),
              str(ffmpeg_video(tmp_path / "d.mkv", synthetic_frames(9, 40, 50, seed=4), codec_args=GRAY_8BIT))]
    common = dict(device="cpu", checkpoint_path=str(checkpoints["r2plus1d_18_16_kinetics"]), stack_size=4,
                  step_size=3, crops=crops, batch_size=20)
    if crops == "ten":  # ten clips a window: the RGB and 4:2:0 videos are enough
        videos = videos[:2]
    host = R21DExtractor("r2plus1d_18_16_kinetics", **common)
    assert host.blend_on_host
    device_like = R21DExtractor("r2plus1d_18_16_kinetics", **common)
    device_like.blend_on_host = False
    want = dict(device_like.extract_many(videos))
    got = dict(host.extract_many(videos))
    for path in videos:
        assert not isinstance(got[path], Exception), got[path]
        assert got[path].features.shape[0] == want[path].features.shape[0] > 0
        assert np.array_equal(got[path].features, want[path].features), path


def test_without_numba_the_cpu_takes_the_chunk_path_and_says_so(checkpoints, monkeypatch, caplog):
    from r21d_features.models.r21d import extractor as extractor_module

    monkeypatch.setattr(extractor_module, "HostBlender", None)
    monkeypatch.setattr(extractor_module, "HOST_BLEND_MISSING", "No module named 'numba'", raising=False)
    with caplog.at_level("WARNING"):
        extractor = R21DExtractor("r2plus1d_18_16_kinetics", device="cpu",
                                  checkpoint_path=str(checkpoints["r2plus1d_18_16_kinetics"]))
    assert not extractor.blend_on_host
    assert "numba cannot be imported (No module named 'numba')" in caplog.text and "pip install numba" in caplog.text


def test_bgr_frames_are_gathered_in_rgb_order_contiguous_or_not():
    rng = np.random.default_rng(7)
    taps = crop_taps(90, 160, SPEC)
    rgb = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    want = gather_planes(Planes((rgb,)), taps)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert np.array_equal(gather_planes(Planes((bgr,), bgr=True), taps), want)
    padded = np.zeros((90, 170, 3), np.uint8)
    padded[:, :160] = bgr
    assert np.array_equal(gather_planes(Planes((padded[:, :160],), bgr=True), taps), want)  # a strided view


def test_without_a_writable_cache_folder_the_kernels_compile_per_process(tmp_path):
    """A read-only install and home: numba finds no cache folder; the import must not fail."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []  # no writable cache folder anywhere\n"
        "import numpy as np\n"
        "from r21d_features.models.r21d.host_blend import HostBlender\n"
        "from r21d_features.models.r21d.preprocess import crop_taps\n"
        "from r21d_features.models.r21d.zoo import get_record\n"
        "from r21d_features.utils.video.decoders import Planes\n"
        "b = HostBlender(crop_taps(48, 64, get_record('r2plus1d_18_16_kinetics').preprocessing))\n"
        "out = np.empty(b.region_hwc, np.float32)\n"
        "b.blend_into(Planes((np.full((48, 64, 3), 255, np.uint8),)), out)\n"
        "print(round(float(out[0, 0, 0]), 4))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2.4902"  # (1 - 0.43216) / 0.22803: the red channel of white
