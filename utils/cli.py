"""What ``main.py`` runs: plain settings in, exit status out. No Hydra here."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, TextIO

from models import get_extractor_class

from .claims import ClaimBook
from .console import video_heading, write_block
from .ffmpeg import FFmpegError
from .path_list import PathListError, check_unique_stems, collect_video_paths, shard
from .predictions import format_window_predictions
from .ray_runner import RAY_KEYS, RUNNERS, RaySettings, run_on_ray
from .runner import RunSummary, run_extraction
from .metadata import METADATA_KEYS
from .plots import PlotsUnavailableError, plot_paths, require_matplotlib, save_video_plots
from .sinks import ON_EXTRACTION_CHOICES, FileSink, Sink, make_sink
from .video_decode import quiet_decoder_logs

log = logging.getLogger(__name__)

# Keys that steer the run; every other key is an argument of the extractor class.
RUN_KEYS = (
    "feature_type", "video_paths", "file_with_video_paths", "on_extraction", "output_path",
    "num_shards", "shard_index", "debug", "progress", "save_plots", "save_metadata", "lock_stale_s", *RAY_KEYS,
)
EXIT_BAD_CONFIG = 2


class SettingsError(ValueError):
    """A run-level setting is not allowed."""


def check_run_settings(settings: Mapping[str, Any]) -> None:
    runner = settings.get("runner", "local")
    if runner not in RUNNERS:
        raise SettingsError(f"runner={runner!r} is unknown; allowed: {', '.join(RUNNERS)}")
    on_extraction = settings.get("on_extraction", "print")
    if on_extraction not in ON_EXTRACTION_CHOICES:
        raise SettingsError(
            f"on_extraction={on_extraction!r} is unknown; allowed: {', '.join(ON_EXTRACTION_CHOICES)}"
        )
    out, tmp = settings.get("output_path"), settings.get("tmp_path")
    if out is not None and tmp is not None and Path(out).resolve() == Path(tmp).resolve():
        raise SettingsError(
            f"output_path and tmp_path are both {out!r}: temporary files would mix with features; "
            "give them different folders"
        )


class _WithPlots:
    """A sink whose videos only count as done when their plots exist too (the plots are
    drawn by the run's ``on_result`` hook, before the features are written)."""

    def __init__(self, sink: Sink, plot_dir: Path) -> None:
        self.sink, self.plot_dir = sink, plot_dir

    def write(self, video_path: str, feats: Mapping[str, Any]) -> list[Path]:
        return self.sink.write(video_path, feats)

    def is_done(self, video_path: str) -> bool:
        plots = plot_paths(self.plot_dir, video_path).values()
        return self.sink.is_done(video_path) and all(p.is_file() for p in plots)


def check_writable_folder(folder: str | os.PathLike, key: str = "output_path") -> None:
    """Create ``folder`` and a file in it, or raise :class:`SettingsError` saying why not."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            f"{key}: cannot write to {os.fspath(folder)!r} ({reason}); choose a folder you can write to"
        ) from None


def run_cli(settings: Mapping[str, Any], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run an extraction as the command line does; returns the process exit status.

    0: every video done or skipped; 1: some video failed; 2: bad settings, nothing done.
    """
    settings = dict(settings)
    debug = bool(settings.get("debug", False))
    quiet_decoder_logs(debug)
    from models.r21d.weights import WeightsUnavailableError  # noqa: PLC0415 (one error type of the zoo)

    save_plots = bool(settings.get("save_plots", False))
    save_metadata = bool(settings.get("save_metadata", False))
    show_pred = bool(settings.get("show_pred", False))
    setup_errors = (ValueError, PathListError, WeightsUnavailableError, FFmpegError, PlotsUnavailableError)
    try:
        check_run_settings(settings)
        if save_plots:
            require_matplotlib()
        paths = collect_video_paths(settings.get("video_paths"), settings.get("file_with_video_paths"))
        check_unique_stems(paths)
        paths = shard(paths, int(settings.get("num_shards", 1)), int(settings.get("shard_index", 0)))
        extractor_cls = get_extractor_class(settings.get("feature_type", "r21d"))
        extractor_args = {k: v for k, v in settings.items() if k not in RUN_KEYS}
        if settings.get("runner", "local") == "ray":
            # Workers build the extractor; setup problems still come back before any video is touched.
            summary, report_path = run_on_ray(
                paths, extractor_args,
                feature_type=settings.get("feature_type", "r21d"),
                on_extraction=settings.get("on_extraction", "print"),
                output_path=settings.get("output_path", "./output"),
                ray_settings=RaySettings.from_settings(settings),
                debug=debug,
                progress=bool(settings.get("progress", True)),
                with_metadata=save_metadata,
                save_plots=save_plots,
            )
            return _finish(summary, report_path, stderr)
        extractor_args["show_pred"] = show_pred or save_plots  # the timeline picture needs the logits
        extractor = extractor_cls(**extractor_args)
    except setup_errors as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_CONFIG

    on_extraction = settings.get("on_extraction", "print")
    output_path = settings.get("output_path", "./output")
    output_dir = Path(output_path) / extractor.feature_type / extractor.model_name
    sink = make_sink(on_extraction, output_path, extractor.feature_type, extractor.model_name,
                     extractor.record.feature_dim, stdout, METADATA_KEYS if save_metadata else ())
    claims = None
    if isinstance(sink, FileSink):  # workers sharing the folder split the videos (utils/claims.py)
        try:
            claims = ClaimBook(sink.path_for, stale_s=float(settings.get("lock_stale_s", 300.0)))
            check_writable_folder(sink.folder)
        except ValueError as exc:
            print(f"error: {exc}", file=stderr)
            return EXIT_BAD_CONFIG
    if save_plots:
        sink = _WithPlots(sink, output_dir)
    report_path = output_dir / "run_report.jsonl" if on_extraction != "print" else None

    def on_result(result: Any) -> None:
        if show_pred:
            write_block(video_heading("Predictions", result.path) + "\n"
                        + format_window_predictions(result.window_bounds, result.logits, extractor.labels),
                        stdout, end="")
        if save_plots:
            random_note = " - RANDOM WEIGHTS" if extractor.weights_source == "random" else ""
            written = save_video_plots(
                output_dir, result.path, result.features, result.window_bounds, result.fps, result.logits,
                extractor.labels, title=f"{Path(result.path).name} - {extractor.model_name}{random_note}",
            )
            log.info("plots of %s: %s", result.path, ", ".join(map(os.fspath, written)))

    try:
        summary: RunSummary = run_extraction(
            extractor, paths, sink,
            on_result=on_result if show_pred or save_plots else None,
            report_path=report_path,
            debug=debug,
            progress=bool(settings.get("progress", True)),
            with_metadata=save_metadata,
            claims=claims,
        )
    finally:
        if claims is not None:
            claims.close()
    return _finish(summary, report_path, stderr)


def _finish(summary: RunSummary, report_path: Path | None, stderr: TextIO) -> int:
    print(summary.format(), file=stderr)
    if report_path is not None:
        print(f"Run report: {os.fspath(report_path)}", file=stderr)
    return summary.exit_code
