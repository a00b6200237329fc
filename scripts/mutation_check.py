"""Mutation check: plant realistic bugs one at a time and make sure the tests catch each one.

Every mutant in ``MUTANTS`` is one exact text replacement in one product file plus the pytest
node ids that must fail with it. The repository is copied to a scratch folder (the work tree is
never modified), a mutant is applied there, only its tests run, and the file is restored for the
next one. First the same tests run on the unmodified copy (they must pass, else a "catch" means
nothing).

    python scripts/mutation_check.py                 # all mutants (~19 min on 2 shared cores)
    python scripts/mutation_check.py --list          # names and files only
    python scripts/mutation_check.py -k bf16 -k pred # only mutants whose name contains one of these

Exit status 0 when every mutant is caught; 1 when one survives, when a mutant's old text is not
found exactly once (the code moved: refresh the anchor), or when its tests cannot run (a node id
that no longer exists, a collection error). Not part of the default test run.

Adding a mutant: one ``Mutant(...)`` row below. Keep ``old`` short but unique in its file, and
name the cheapest tests that should catch it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


# Tests that the mutants name (pytest node ids).
P = "tests/test_oracle_parity.py"
C = "tests/test_cli_values.py"
R18_OVERLAP = f"{P}::test_r18_matches_the_oracle[clip14-5-3-2-4]"
R18_GAPS = f"{P}::test_r18_matches_the_oracle[clip14-3-5-4-3]"
CHECKERBOARD = f"{P}::test_resize_weights_on_a_full_contrast_checkerboard"
R18_DEFAULT_STEP = f"{P}::test_r18_matches_the_oracle[clip20-2-None-2-2]"
R34_8 = f"{P}::test_r34_8_matches_the_oracle_with_its_default_windows"
BF16 = f"{P}::test_reduced_precision_is_used_and_within_its_documented_error[bf16]"
FP16 = f"{P}::test_reduced_precision_is_used_and_within_its_documented_error[fp16]"
PRED_KNOWN = f"{C}::test_prediction_rows_are_labels_logits_and_softmax_over_all_classes"
PRED_ORACLE = f"{C}::test_prediction_rows_follow_the_oracle_logits"
STATS = f"{C}::test_printed_statistics_are_those_of_the_saved_array"
SAVED = f"{C}::test_saved_features_and_window_spans_match_the_oracle"
ONE_ERROR_LINE = f"{C}::test_bad_setting_is_one_error_line_without_traceback[stack_size=0-needles0]"
STALE_CLAIM = "tests/reliability/test_reliability_claims.py::test_claim_that_goes_stale_while_waiting_is_taken_over"
TIME_LIMIT = ("tests/reliability/test_reliability_limits.py::"
              "test_video_over_the_time_limit_fails_with_a_reason_and_the_run_goes_on")

EXTRACTOR = "models/r21d/extractor.py"
BUILDERS = "models/r21d/builders.py"
PREPROCESS = "models/r21d/preprocess.py"
ZOO = "models/r21d/zoo.py"
PREDICTIONS = "utils/outputs/predictions.py"
SINKS = "utils/outputs/sinks.py"

CROPS_FILE = "models/r21d/crops.py"
YUV = "utils/video/decoders/yuv.py"
HOST_BLEND = "tests/test_host_blend.py::test_host_blend_is_the_device_path_to_the_bit[360-640]"
HDF5 = "utils/outputs/hdf5_sink.py"
SETTINGS = "models/r21d/settings.py"

D = "tests/test_decoders.py"
T = "tests/trust"
CROP_ORDER = "tests/test_crops.py::test_crop_positions_and_order_are_torchvisions"
TEN_CROP_ORACLE = ("tests/test_crops.py::"
                   "test_multicrop_matches_the_torchvision_oracle_and_crop_4_is_the_centre_run[ten-16]")
YUV_BT601 = f"{D}::test_yuv_model_is_swscale_to_the_bit[2-1-yuv420p-48]"
YUV_BT709 = f"{D}::test_yuv_model_is_swscale_to_the_bit[1-1-yuv420p-48]"
YUV_FULL = f"{D}::test_yuv_model_is_swscale_to_the_bit[1-2-yuvj420p-32]"
YUV_DEVICE = f"{D}::test_device_conversion_equals_the_model_on_every_path"
YUV_J_UNTAGGED = f"{D}::test_yuv_model_is_swscale_to_the_bit[5-0-yuvj420p-32]"
H264_ORACLE = f"{D}::test_codec_and_pixel_format_match_the_oracle[h264]"  # 8-bit 4:2:0: gathered as YUV taps
MJPEG_ORACLE = f"{D}::test_codec_and_pixel_format_match_the_oracle[mjpeg_full_range]"
HDF5_MIRROR = ("tests/reliability/test_reliability_hdf5.py::"
               "test_hdf5_holds_the_numpy_sinks_arrays_keyed_by_mirrored_path")
HDF5_KILL = ("tests/reliability/test_reliability_hdf5.py::"
             "test_kill_9_mid_write_never_damages_the_videos_already_in_a_part")
PROVENANCE_RERUN = (f"{T}/test_trust_provenance.py::"
                    "test_rerun_with_other_settings_stops_then_overwrite_redoes_and_resumes")
LIST_BOM = f"{T}/test_trust_lists.py::test_bom_crlf_comments_and_non_utf8_names"
SIGTERM = f"{T}/test_trust_stops.py::test_signal_stops_cleanly_and_the_same_command_resumes[15-re-encode]"
SETTINGS_ONE_LINE = "tests/test_settings.py::test_settings_check_their_values_in_one_line"
SINGULAR = "tests/test_console.py::test_one_video_is_counted_in_the_singular"

MUTANTS: list[Mutant] = [
    # --- precision
    Mutant("bf16-silently-fp32-on-cpu", EXTRACTOR,
           'if self.settings.precision == "fp32":',
           'if self.settings.precision == "fp32" or self.device.type == "cpu":', (BF16,)),
    Mutant("fp16-runs-as-bf16", EXTRACTOR,
           "(torch.float32, torch.bfloat16, torch.float16)", "(torch.float32, torch.bfloat16, torch.bfloat16)",
           (FP16,)),
    # --- show_pred
    Mutant("show-pred-neighbouring-label", PREDICTIONS,
           "| {labels[idx]}", "| {labels[idx - 1]}", (PRED_KNOWN,)),
    Mutant("softmax-renormalised-over-top-5", PREDICTIONS,
           "probs = np.exp(shifted) / np.exp(shifted).sum()",
           "probs = np.exp(shifted) / np.sort(np.exp(shifted))[-k:].sum()", (PRED_KNOWN,)),
    Mutant("top-5-in-ascending-order", PREDICTIONS,
           'order = np.argsort(-logits_row, kind="stable")[:k]',
           'order = np.argsort(logits_row, kind="stable")[-k:]', (PRED_ORACLE, PRED_KNOWN)),
    Mutant("show-pred-inclusive-window-end", PREDICTIONS,
           'f"At frames ({start}, {end})"', 'f"At frames ({start}, {end - 1})"', (PRED_KNOWN,)),
    # --- print statistics
    Mutant("print-max-min-swapped", SINKS,
           'f"max: {array.max():.8f}; mean: {array.mean():.8f}; min: {array.min():.8f}"',
           'f"max: {array.min():.8f}; mean: {array.mean():.8f}; min: {array.max():.8f}"', (STATS,)),
    Mutant("print-mean-of-first-window", SINKS,
           "mean: {array.mean():.8f}", "mean: {array[0].mean():.8f}", (STATS,)),
    # --- network
    Mutant("r34-wrong-midplanes", BUILDERS,
           '"layer3": 576', '"layer3": 512', (R34_8,)),
    Mutant("r34-batchnorm-eps-default", BUILDERS,
           "R2PLUS1D_34_BN_EPS = 1e-3", "R2PLUS1D_34_BN_EPS = 1e-5", (R34_8,)),
    Mutant("bn-folding-drops-bias", BUILDERS,
           "    return fuse(model.eval())",
           "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm3d):\n"
           "            m.bias.data.zero_()\n    return fuse(model.eval())", (R18_OVERLAP,)),
    Mutant("bn-folding-drops-weight", BUILDERS,
           "    return fuse(model.eval())",
           "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm3d):\n"
           "            m.weight.data.fill_(1.0)\n    return fuse(model.eval())", (R18_OVERLAP,)),
    # --- preprocessing
    Mutant("mean-off-in-4th-decimal", ZOO,
           "(0.43216, 0.394666, 0.37645)", "(0.43216, 0.394766, 0.37645)", (R18_OVERLAP, R18_GAPS)),
    Mutant("std-off-in-4th-decimal", ZOO,
           "(0.22803, 0.22145, 0.216989)", "(0.22803, 0.22145, 0.217089)", (R18_OVERLAP, R18_GAPS)),
    Mutant("tap-weights-rounded-to-1/2048", PREPROCESS,
           "    return torch.cat([lo, hi]).numpy(), torch.stack([1.0 - frac, frac])",
           "    frac = (frac * 2048).round() / 2048\n"
           "    return torch.cat([lo, hi]).numpy(), torch.stack([1.0 - frac, frac])", (CHECKERBOARD,)),
    Mutant("crop-left-floored", ZOO,
           "int(round((w - cw) / 2.0))", "int((w - cw) / 2.0)", (R18_OVERLAP,)),
    Mutant("resize-source-index-without-half-pixel", PREPROCESS,
           "src = (scale * (dst + 0.5) - 0.5).clamp_(min=0.0)", "src = (scale * dst).clamp_(min=0.0)",
           (R18_OVERLAP,)),
    # --- decoding and YUV -> RGB (the PyAV backend hands YUV taps; RGB is made on the device)
    Mutant("frames-left-in-bgr", YUV,  # R and B swapped in the CPU conversion (swscale on the taps)
           'return frame.to_ndarray(format="rgb24").reshape(n, h, w, 2, 3)[:, :, :, 0]',
           'return frame.to_ndarray(format="rgb24").reshape(n, h, w, 2, 3)[:, :, :, 0, ::-1].copy()',
           (YUV_DEVICE, H264_ORACLE)),
    Mutant("yuv-u-and-v-swapped", YUV,
           "np.copyto(cb.reshape(n, h, w), yuv[..., 1])", "np.copyto(cb.reshape(n, h, w), yuv[..., 2])",
           (YUV_DEVICE, H264_ORACLE)),
    Mutant("yuv-gpu-lookup-red-from-u", YUV,  # the GPU path: R read from (Y, U)
           "torch.stack([r[y_hi | v],", "torch.stack([r[y_hi | u],", (YUV_DEVICE,)),
    Mutant("yuv-cpu-fallback-lookup-red-from-u", YUV,  # where swscale's shortcut does not match the model
           "out[..., 0] = t.r.take(y_hi | v)", "out[..., 0] = t.r.take(y_hi | u)", (YUV_DEVICE,)),
    Mutant("yuv-limited-range-luma-offset-15", YUV,
           "cy, oy = (cy * 255) // 219, 16 << 16", "cy, oy = (cy * 255) // 219, 15 << 16", (YUV_BT601,)),
    Mutant("yuv-bt709-red-coefficient-off", YUV,
           "1: (117489, 138438, 13975, 34925),", "1: (117498, 138438, 13975, 34925),", (YUV_BT709,)),
    Mutant("yuvj-taken-as-limited-range", YUV,
           'pix_fmt.startswith("yuvj") or color_range == AVCOL_RANGE_JPEG',
           'color_range == AVCOL_RANGE_JPEG', (YUV_J_UNTAGGED, MJPEG_ORACLE)),
    Mutant("opencv-frames-left-in-bgr", "utils/video/decoders/opencv_backend.py",  # BGR frames not marked as such
           "Planes((frame_bgr,), bgr=True)", "Planes((frame_bgr,))",
           (f"{D}::test_display_rotation_is_ignored_by_default_and_applied_on_request",)),
    # --- the CPU's compiled preprocessing (decode threads)
    Mutant("host-blend-bgr-channels-not-reversed", "models/r21d/host_blend.py",
           "source = 2 - ch if bgr else ch", "source = ch", (HOST_BLEND,)),
    Mutant("host-blend-422-chroma-rows-halved", "models/r21d/host_blend.py",
           "y_row, u_row, v_row = y[r], u[r >> vshift], v[r >> vshift]",
           "y_row, u_row, v_row = y[r], u[r >> 1], v[r >> 1]", (HOST_BLEND,)),
    # --- windows
    Mutant("last-full-window-dropped", "utils/video/window_stream.py",
           "if end - 1 > last_seen:", "if end > last_seen:", (R18_OVERLAP,)),
    Mutant("window-end-reported-inclusive", "utils/video/windows.py",
           "return [(i * step_size, i * step_size + stack_size) for i in range(n)]",
           "return [(i * step_size, i * step_size + stack_size - 1) for i in range(n)]", (SAVED,)),
    Mutant("stack-and-step-swapped", SETTINGS,
           "return (record.stack_size if self.stack_size is None else self.stack_size,",
           "return (record.stack_size if self.stack_size is None else (self.step_size or self.stack_size),",
           (R18_OVERLAP,)),
    Mutant("r18-default-step-halved", ZOO,
           "stack_size=16,\n            step_size=16,", "stack_size=16,\n            step_size=8,",
           (R18_DEFAULT_STEP,)),
    Mutant("window-times-one-frame-late", "utils/outputs/metadata.py",
           "times_s = frames / fps", "times_s = (frames + 1) / fps", (SAVED,)),
    # --- multi-crop
    Mutant("five-crop-top-right-and-bottom-left-swapped", CROPS_FILE,
           "five = (CropBox(0, 0), CropBox(0, w - cw), CropBox(h - ch, 0),",
           "five = (CropBox(0, 0), CropBox(h - ch, 0), CropBox(0, w - cw),", (CROP_ORDER,)),
    Mutant("ten-crop-flip-missing", CROPS_FILE,
           "CropBox(b.top, b.left, flipped=True) for b in five", "CropBox(b.top, b.left) for b in five",
           (TEN_CROP_ORACLE,)),
    # --- HDF5 sink and output names
    Mutant("hdf5-complete-before-the-data", HDF5,
           "ds = f.create_dataset(vid, data=features)",
           "ds = f.create_dataset(vid, shape=features.shape, dtype=np.float32)\n"
           "        ds.attrs[COMPLETE_ATTR] = np.int8(1)\n        f.flush()\n        ds[...] = features",
           (HDF5_KILL,)),
    Mutant("hdf5-no-flush-after-a-video", HDF5,
           "        f.flush()\n        self._done.add(vid)", "        self._done.add(vid)", (HDF5_KILL,)),
    Mutant("hdf5-resume-ignores-video-root", HDF5,
           "        vid = video_id(video_path, self.video_root)\n        if vid not in self._done:",
           "        vid = video_id(video_path)\n        if vid not in self._done:", (HDF5_MIRROR,)),
    # --- provenance, list files, signals, settings, console
    Mutant("provenance-ignores-precision", EXTRACTOR,
           '            "precision": self.settings.precision,\n', "", (PROVENANCE_RERUN,)),
    Mutant("provenance-ignores-decoder", EXTRACTOR,
           '            "decoder": self.settings.decoder,\n', "", (PROVENANCE_RERUN,)),
    Mutant("list-file-bom-not-stripped", "utils/video/path_list.py",
           "        data = data[3:]\n", "        pass\n", (LIST_BOM,)),
    Mutant("signal-exit-code-not-128-plus-signum", "utils/run/signals.py",
           "self.exit_code = 128 + signum", "self.exit_code = 1", (SIGTERM,)),
    Mutant("settings-error-reraised-with-traceback", "utils/run/cli.py",
           '        print(f"error: {exc}", file=stderr)\n        return EXIT_BAD_CONFIG\n\n\nclass _tmp_folder',
           '        print(f"error: {exc}", file=stderr)\n        raise\n\n\nclass _tmp_folder', (ONE_ERROR_LINE,)),
    Mutant("settings-stack-size-0-accepted", SETTINGS,
           "if value is not None and value < 1:", "if value is not None and value < 0:", (SETTINGS_ONE_LINE,)),
    Mutant("plural-for-one", "utils/core/console.py",
           "singular if count == 1 else", "singular if count == 0 else", (SINGULAR,)),
    # --- errors and timing
    Mutant("stale-claim-waits-twice-stale_s", "utils/run/claims.py",
           "if age_s > self.stale_s:", "if age_s > 2 * self.stale_s:", (STALE_CLAIM,)),
    # The time limit is kept on two sides: the decode thread stops itself (extractor._deadline) and
    # the model thread fails the video and replaces its decoder (batcher); either alone gives the
    # same outcome for a slow decoder, so a mutant of one side only shows where the other cannot
    # act: a decoder stuck inside one call, which only the model side ends.
    Mutant("time-limit-never-started-for-a-stuck-decoder", "utils/pipeline/batcher.py",
           "video.deadline = time.monotonic() + self.timeout_s", "video.deadline = None",
           ("tests/test_pipeline.py::test_a_stuck_decoder_is_replaced_so_later_videos_still_run", TIME_LIMIT)),
]


def copy_tree(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the work tree (no venvs, outputs, .git).

    Symbolic links are copied as links (``r21d_features -> .`` must stay a link, or imports fail).
    """
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_symlink():  # e.g. ``r21d_features -> .``: the package imports itself through it
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dst / rel)
        elif src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel, follow_symlinks=False)


def run_tests(scratch: Path, tests: tuple[str, ...], python: str, timeout_s: float) -> tuple[int, str, float]:
    """``(pytest exit code, last lines of output, seconds)``; stops at the first failure."""
    cmd = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=--strict-markers",
           f"--basetemp={scratch / '.pytest_tmp'}", *tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout_s:.0f} s", time.monotonic() - t0
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
    return proc.returncode, tail, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="run only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the tests on the unmodified copy")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.k or any(k in m.name for k in args.k)]
    if args.list:
        for m in mutants:
            print(f"{m.name:42s} {m.file}")
        return 0

    problems = []
    for m in mutants:  # anchors first: code drift is reported before anything runs
        count = (ROOT / m.file).read_text(encoding="utf-8").count(m.old)
        if count != 1:
            problems.append(f"{m.name}: old text found {count} times in {m.file} (expected once); refresh the anchor")
    if problems:
        print("\n".join(problems))
        return 1

    results: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="r21d-mutants-") as tmp:
        scratch = Path(tmp)
        copy_tree(scratch)
        if not args.skip_baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            code, tail, seconds = run_tests(scratch, tests, args.python, args.timeout * 2)
            print(f"baseline: {len(tests)} tests on the unmodified copy, exit {code} ({seconds:.0f} s)", flush=True)
            if code != 0:
                print(tail)
                print("the tests must pass without mutants first")
                return 1
        for m in mutants:
            path = scratch / m.file
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
            try:
                code, tail, seconds = run_tests(scratch, m.tests, args.python, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            verdict = {0: "SURVIVED", 1: "caught"}.get(code, f"ERROR (pytest exit {code})")
            results.append((m.name, verdict, seconds))
            print(f"{verdict:22s} {m.name:42s} {seconds:5.0f} s", flush=True)
            if code != 1:
                print("    " + tail.replace("\n", "\n    "))

    caught = sum(v == "caught" for _, v, _ in results)
    print(f"\n{caught}/{len(results)} mutants caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
