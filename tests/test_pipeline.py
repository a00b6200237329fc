"""Many videos in flight: cross-video batches, the writer thread, device errors (simulated on CPU)."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from r21d_features.models.r21d import R21DExtractor
from r21d_features.models.r21d import device_errors
from r21d_features.models.r21d.batching import R21DBatchModel
from tests.helpers import rel_err, run_cli_quietly
from r21d_features.utils.pipeline.batcher import WindowBatcher
from r21d_features.utils.core.errors import DeviceFailure
from r21d_features.utils.run.driver import Driver
from r21d_features.utils.run.ray_runner import ExtractionWorker
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.outputs.sinks import FileSink, PrintSink, load_feature_file, make_sink

R18 = "r2plus1d_18_16_kinetics"
ILLEGAL_ADDRESS = "CUDA error: an illegal memory access was encountered"


# ---------------------------------------------------------------------- the batcher alone
class _FakeModel:
    """Frames are their own labels: frame value = video * 1000 + frame index, so each output row
    says which video and window it was computed from."""

    stack_size, step_size, batch_size = 3, 2, 4

    def __init__(self, lengths: dict[str, int]) -> None:
        self.lengths = lengths
        self.rng = random.Random(0)
        self.batches: list[int] = []

    def decode(self, path, cancelled):
        if self.lengths[path] < 0:
            raise ValueError(f"{path} is broken")
        yield SimpleNamespace(frames_decoded=[self.lengths[path]])
        video = int(path[1:])
        for first in range(0, self.lengths[path], 5):
            time.sleep(self.rng.random() * 0.002)  # decoders at uneven speeds: interleaved chunks
            idx = np.arange(first, min(first + 5, self.lengths[path]))
            yield idx, torch.tensor(video * 1000 + idx, dtype=torch.float64).view(-1, 1)

    def prepare(self, video, chunk):
        return chunk

    def drop(self, chunk):
        pass

    def forward(self, windows):
        self.batches.append(len(windows))
        return [torch.stack([w[0, 0] for w in windows])]

    def finish(self, video, outputs):
        return outputs[0].tolist() if outputs else []

    def timed_out(self, video):
        return TimeoutError(video.path)

    def classify(self, exc):
        return "video"

    def free_memory(self):
        pass

    def ready(self, result):
        return True


def test_batcher_gives_every_window_back_to_its_own_video():
    lengths = {f"v{i}": n for i, n in enumerate([40, 3, 17, 2, 61, 9, -1, 25, 12, 33])}
    model = _FakeModel(lengths)
    results = dict(WindowBatcher(model, workers=4).run(list(lengths)))
    assert sorted(results) == sorted(lengths)
    for path, n in lengths.items():
        video = int(path[1:])
        if n < 0:
            assert isinstance(results[path], ValueError)
            continue
        starts = range(0, max(0, n - 3) + 1, 2) if n >= 3 else []
        assert results[path] == [video * 1000 + s for s in starts], path
    assert max(model.batches) == 4 and model.batches.count(4) >= len(model.batches) - 3  # batches span videos


class _SlowDecoders(_FakeModel):
    """Chunks 0.08 s apart: slower than any short wait for the next chunk."""

    def decode(self, path, cancelled):
        for item in super().decode(path, cancelled):
            time.sleep(0.08)
            yield item


def test_slow_decoders_never_cause_extra_padded_batches():
    # Every batch has the network's one shape, so a batch run early with few windows costs as
    # much as a full one: only the very last batch of the run may be partial.
    lengths = {"v1": 23, "v2": 17, "v3": 30}
    model = _SlowDecoders(lengths)
    results = dict(WindowBatcher(model, workers=2).run(list(lengths)))
    windows = sum(len(results[p]) for p in lengths)
    assert windows == sum((n - 3) // 2 + 1 for n in lengths.values())
    assert model.batches == [4] * (windows // 4) + ([windows % 4] if windows % 4 else [])


class _StuckDecoder(_FakeModel):
    """``v1``'s decoder is stuck inside one call (no way to interrupt it) for ``stuck_s``."""

    stuck_s = 4.0

    def decode(self, path, cancelled):
        if path == "v1":
            time.sleep(self.stuck_s)
        yield from super().decode(path, cancelled)


def test_a_stuck_decoder_is_replaced_so_later_videos_still_run():
    lengths = {"v1": 9, "v2": 11, "v3": 7}
    model = _StuckDecoder(lengths)
    t0 = time.monotonic()
    results = dict(WindowBatcher(model, workers=1, timeout_s=0.5).run(list(lengths)))
    assert time.monotonic() - t0 < model.stuck_s - 1  # not waiting for the stuck call to return
    assert isinstance(results["v1"], TimeoutError)
    assert results["v2"] == [2000 + s for s in range(0, 11 - 3 + 1, 2)]
    assert results["v3"] == [3000 + s for s in range(0, 7 - 3 + 1, 2)]


class _PoisonedDecoder(_FakeModel):
    def decode(self, path, cancelled):
        if path == "v2":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield from super().decode(path, cancelled)

    def classify(self, exc):
        return "fatal" if "illegal memory access" in str(exc) else "video"


def test_a_fatal_device_error_seen_by_a_decoder_stops_the_run():
    with pytest.raises(RuntimeError, match="illegal memory access"):
        list(WindowBatcher(_PoisonedDecoder({"v1": 30, "v2": 5, "v3": 30}), workers=2).run(["v1", "v2", "v3"]))


# ---------------------------------------------------------------------- the real extractor
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from tests.helpers import synthetic_frames, write_video

    folder = tmp_path_factory.mktemp("mixed")
    specs = {"long": (46, 48, 64), "short_a": (9, 40, 56), "too_short": (3, 48, 64), "short_b": (13, 64, 48),
             "mid": (20, 56, 72)}
    paths = {name: str(write_video(folder / f"{name}.mp4", synthetic_frames(n, h, w, seed=i)))
             for i, (name, (n, h, w)) in enumerate(specs.items())}
    junk = folder / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    paths["junk"] = str(junk)
    return paths


def _extractor(checkpoints, **kw):
    common = dict(device="cpu", checkpoint_path=str(checkpoints[R18]), stack_size=4, step_size=3, batch_size=4)
    return R21DExtractor(R18, **{**common, **kw})


@pytest.mark.slow  # 26 s; the oracle parity tests cover batches across videos in the default suite
def test_cross_video_batches_equal_per_video_features(checkpoints, videos):
    extractor = _extractor(checkpoints, decode_workers=3, step_size=4)
    order = list(videos.values())
    got = dict(extractor.extract_many(order))
    again = dict(_extractor(checkpoints, decode_workers=1, step_size=4).extract_many(order[::-1]))
    assert isinstance(got[videos["junk"]], Exception) and isinstance(again[videos["junk"]], Exception)
    for name, path in videos.items():
        if name == "junk":
            continue
        want = extractor.extract_video(path).features  # one video at a time, batches within it
        assert got[path].features.shape == want.shape, name
        if want.size:
            assert rel_err(got[path].features, want) <= 1e-6, name
        # Another interleaving, other batch-mates: the same bits (every batch has one shape).
        np.testing.assert_array_equal(got[path].features, again[path].features, err_msg=name)
    assert got[videos["too_short"]].features.shape == (0, 512)


@pytest.mark.slow
def test_timed_out_and_failing_videos_leave_batch_mates_alone(checkpoints, videos, monkeypatch):
    extractor = _extractor(checkpoints, decode_workers=3, video_timeout_s=8.0)
    want = {p: r.features for p, r in _extractor(checkpoints, decode_workers=2).extract_many(
        [videos["long"], videos["short_a"]])}
    original = R21DExtractor.decode_chunks

    def stuck_on_mid(self, path, *args, **kwargs):
        for i, item in enumerate(original(self, path, *args, **kwargs)):
            if path == videos["mid"] and i == 1:
                time.sleep(11)  # its first chunk's windows are already waiting in a batch
            yield item

    monkeypatch.setattr(R21DExtractor, "decode_chunks", stuck_on_mid)
    got = dict(extractor.extract_many([videos["mid"], videos["long"], videos["junk"], videos["short_a"]]))
    assert "took longer than video_timeout_s=8.0" in str(got[videos["mid"]])
    assert isinstance(got[videos["junk"]], Exception)
    for path in (videos["long"], videos["short_a"]):
        np.testing.assert_array_equal(got[path].features, want[path])


def test_chunks_that_fail_on_the_model_side_give_their_buffers_back(checkpoints, videos, monkeypatch):
    """The GPU's chunk path (pooled tap buffers), run on the CPU: more failing chunks than the pool
    holds, then a good video, which must still get buffers (a lost one would starve the decoders)."""
    extractor = _extractor(checkpoints, decode_workers=1, video_timeout_s=30.0)
    extractor.blend_on_host = False  # tap buffers from the pool, as on a GPU
    failures = {"left": 8}  # the pool holds 3 x workers + 2 = 5 buffers
    real = extractor.chunk_frames

    def failing(chunk, taps):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ValueError("this chunk cannot be preprocessed")
        return real(chunk, taps)

    monkeypatch.setattr(extractor, "chunk_frames", failing)
    paths = [videos[n] for n in ("short_a", "short_b", "mid", "long", "too_short")] * 2
    results = list(extractor.extract_many(paths[:8]))
    assert sum(isinstance(r, ValueError) for _, r in results) == 8
    (good,) = [r for _, r in extractor.extract_many([videos["long"]])]
    assert not isinstance(good, Exception), good
    assert good.features.shape == (15, 512)


@pytest.mark.slow  # 15 s; test_ray_runner's worker test covers one actor session in the default suite
def test_ray_worker_session_equals_local_run(checkpoints, videos, tmp_path):
    """The Ray worker's own loop (without Ray): same files as the local runner, host and pid on each outcome."""
    settings = _extractor(checkpoints).settings
    paths = [videos[n] for n in ("short_a", "long", "junk", "too_short")]
    worker = ExtractionWorker(R21DExtractor, settings, "save_numpy", str(tmp_path / "ray"))
    worker.exchange(paths, close=True, wait_s=0)
    outcomes = []
    deadline = time.monotonic() + 120
    while len(outcomes) < len(paths) and time.monotonic() < deadline:
        outcomes += worker.exchange([], close=False, wait_s=1.0)
    worker.stop()
    assert sorted(o.path for o in outcomes) == sorted(paths)
    assert all(o.host and o.pid for o in outcomes)
    local = dict(_extractor(checkpoints, decode_workers=2).extract_many(paths))
    folder = tmp_path / "ray" / "r21d" / R18
    for path in paths:
        file = folder / f"{Path(path).stem}_r21d.npy"
        if isinstance(local[path], Exception):
            assert not file.exists()
        else:
            np.testing.assert_array_equal(load_feature_file(file), local[path].features)


# ---------------------------------------------------------------------- the writer thread
class _Result:
    def __init__(self, path: str) -> None:
        self.path, self.num_frames, self.warnings = path, 8, []
        self.features = np.full((2, 512), len(path), np.float32)

    def as_dict(self, metadata: bool = False):
        return {"r21d": self.features}


class _InterruptedExtractor:
    """Yields results for the first ``stop_after`` paths it is given, then Ctrl-C."""

    def __init__(self, stop_after: int | None) -> None:
        self.stop_after, self.computed = stop_after, []

    def extract_many(self, paths):
        for i, path in enumerate(paths):
            if self.stop_after is not None and i == self.stop_after:
                raise KeyboardInterrupt
            self.computed.append(path)
            yield path, _Result(path)


def test_writer_thread_never_loses_a_result_on_ctrl_c(tmp_path, monkeypatch):
    paths = [str(tmp_path / f"v{i}.mp4") for i in range(6)]
    for path in paths:  # the fake extractor never reads them, but a missing file fails before any work
        Path(path).touch()
    sink = make_sink("save_numpy", str(tmp_path / "out"), "r21d", R18, 512, None)
    slow_write = sink.write

    def write(path, feats):
        time.sleep(0.2)  # a slow file system: results are still queued when Ctrl-C comes
        return slow_write(path, feats)

    monkeypatch.setattr(sink, "write", write)
    interrupted = _InterruptedExtractor(stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(interrupted, paths, sink, progress=False)
    assert all(sink.is_done(p) for p in interrupted.computed) and len(interrupted.computed) == 4
    resumed = _InterruptedExtractor(stop_after=None)
    summary = run_extraction(resumed, paths, sink, progress=False)
    assert resumed.computed == paths[4:] and summary.count("skipped") == 4
    assert all(sink.is_done(p) for p in paths)


# ---------------------------------------------------------------------- device errors, simulated
def test_poisoned_device_stops_the_run_with_one_line_and_no_failed_markers(tmp_path, videos, monkeypatch):
    calls = []
    original = R21DExtractor.forward_clips

    def poisoned(self, clips):
        calls.append(len(clips))
        if len(calls) >= 2:
            raise RuntimeError(f"{ILLEGAL_ADDRESS}\nCUDA kernel errors might be asynchronously reported")
        return original(self, clips)

    monkeypatch.setattr(R21DExtractor, "forward_clips", poisoned)
    paths = [videos[n] for n in ("long", "mid", "short_a", "short_b")]
    code, _, stderr = run_cli_quietly(tmp_path, Path(paths[0]), video_paths=paths, batch_size=2, decode_workers=2)
    assert code == 3
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: device cpu failed: {ILLEGAL_ADDRESS}; {device_errors.RERUN_HINT}"]
    assert "FAILED" not in stderr
    assert len(calls) == 2  # stopped at once, not once per remaining video
    out = tmp_path / "out"
    assert not list(out.rglob("*.failed")) and not list(out.rglob("*.lock"))


def test_out_of_memory_frees_the_batch_and_retries(checkpoints, videos, monkeypatch):
    want = {p: r.features for p, r in _extractor(checkpoints).extract_many([videos["mid"], videos["short_b"]])}
    original = R21DExtractor.forward_clips
    calls, freed = [], []

    def oom_once(self, clips):
        calls.append(1)
        if len(calls) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, clips)

    monkeypatch.setattr(R21DExtractor, "forward_clips", oom_once)
    monkeypatch.setattr(R21DBatchModel, "free_memory", lambda self: freed.append(1))
    got = dict(_extractor(checkpoints).extract_many([videos["mid"], videos["short_b"]]))
    assert freed == [1]
    for path, features in want.items():
        np.testing.assert_array_equal(got[path].features, features)


def test_start_up_probe_names_a_gpu_without_kernels():
    def no_kernel():
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    with pytest.raises(DeviceFailure, match="no kernels for this GPU's architecture"):
        device_errors.probe(no_kernel, torch.device("cpu"))
    assert device_errors.classify(RuntimeError("CUDA error: device-side assert triggered")) == "fatal"
    assert device_errors.classify(torch.cuda.OutOfMemoryError("CUDA out of memory")) == "oom"
    assert device_errors.classify(ValueError("frame size changes mid-stream")) == "video"


def test_input_order_puts_back_results_of_paths_given_as_path_objects():
    from r21d_features.utils.pipeline.writer import InputOrder

    order = InputOrder()
    paths = [Path("/videos/a.mp4"), Path("/videos/b.mp4"), Path("/videos/c.mp4")]
    taken = list(order.track(paths))
    results = [("/videos/c.mp4", 3), ("/videos/a.mp4", 1), ("/videos/b.mp4", 2)]  # completion order, as str
    assert taken == paths and list(order.reorder(results)) == [("/videos/a.mp4", 1), ("/videos/b.mp4", 2),
                                                                ("/videos/c.mp4", 3)]


# ---------------------------------------------------------------------- the driver's order of results
class _LastFinishesFirst:
    """A real extractor whose videos finish in reverse order (a long video ahead of short ones,
    several decoders): what ``extract_many`` may do, as the driver's contract allows."""

    def __init__(self, extractor: R21DExtractor) -> None:
        self.extractor = extractor

    def extract_many(self, video_paths):
        return reversed(list(self.extractor.extract_many(video_paths)))


def test_printed_features_and_predictions_follow_the_input_order_whatever_finishes_first(checkpoints, videos,
                                                                                         tmp_path):
    paths = [str(videos[k]) for k in ("mid", "short_a", "short_b")]
    extractor = _LastFinishesFirst(_extractor(checkpoints))
    printed, seen, outcomes = io.StringIO(), [], []
    Driver(extractor, PrintSink(printed)).run(paths, outcomes.append)
    headings = [line for line in printed.getvalue().splitlines() if line.startswith("Features for")]
    assert headings == [f"Features for {p}:" for p in paths]
    assert [o.path for o in outcomes] == paths and {o.status for o in outcomes} == {"done"}

    # A result callback (the console's predictions) sees the videos in input order with any sink;
    # without one, a file sink stores each video as soon as it is done.
    sink = FileSink(tmp_path / "out", "r21d", R18, "npy", 512)
    outcomes.clear()
    Driver(extractor, sink, on_result=lambda result: seen.append(result)).run(paths, outcomes.append)
    assert [o.path for o in outcomes] == paths and len(seen) == 3
    outcomes.clear()
    Driver(extractor, FileSink(tmp_path / "again", "r21d", R18, "npy", 512)).run(paths, outcomes.append)
    assert [o.path for o in outcomes] == paths[::-1]
