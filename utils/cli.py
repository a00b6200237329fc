"""What ``main.py`` runs: flat settings in, exit status out. No Hydra here, and no model:
``main.py`` hands in the function that gives the extractor class of a ``feature_type``."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, TextIO

from .claims import ClaimBook
from .errors import DeviceFailure, SettingsError, UserError
from .path_list import check_unique_stems, collect_video_paths, shard
from .plots import plot_paths, require_matplotlib, save_video_plots
from .predictions import format_window_predictions
from .ray_runner import RaySettings, run_on_ray
from .runner import RunSummary, report_path_in, run_extraction
from .metadata import METADATA_KEYS
from .settings import ExtractorSettings, RunSettings, split_settings
from .sinks import FileSink, Sink, make_sink, output_dir
from .video_decode import quiet_decoder_logs

log = logging.getLogger(__name__)

EXIT_BAD_CONFIG = 2
EXIT_DEVICE_FAILED = 3  # the device broke mid-run: the run stopped; the same command resumes


class Extractor(Protocol):
    """What the command line needs of an extractor (see models.r21d.R21DExtractor)."""

    feature_type: str
    model_name: str
    feature_dim: int
    labels: list[str]
    weights_source: str  # the weights file, or "random"

    def extract_many(self, video_paths: Iterable[str]) -> Iterator[tuple[str, object]]: ...


class ExtractorClass(Protocol):
    """An extractor class: its settings dataclass, and an instance made from one."""

    feature_type: str
    Settings: type

    def __call__(self, settings: ExtractorSettings) -> Extractor: ...


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


def check_folders_differ(run: RunSettings, extractor_settings: ExtractorSettings) -> None:
    out, tmp = run.output_path, extractor_settings.tmp_path
    if out is not None and tmp is not None and Path(out).resolve() == Path(tmp).resolve():
        raise SettingsError(
            f"output_path and tmp_path are both {out!r}: temporary files would mix with features; "
            "give them different folders"
        )


def run_cli(
    values: Mapping[str, Any],
    extractor_class_for: Callable[[str], ExtractorClass],
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """Run an extraction as the command line does; returns the process exit status.

    ``values``: every key of the command line (``feature_type`` plus the fields of
    :class:`~utils.settings.RunSettings`, :class:`~utils.ray_runner.RaySettings` and the
    extractor's settings), missing ones at their defaults.
    0: every video done or skipped; 1: some video failed; 2: bad settings, nothing done.
    """
    values = dict(values)
    quiet_decoder_logs(bool(values.get("debug", False)))
    try:
        extractor_cls = extractor_class_for(values.pop("feature_type", "r21d"))
        run, ray_settings, extractor_settings = split_settings(
            values, [RunSettings, RaySettings, extractor_cls.Settings])
        check_folders_differ(run, extractor_settings)
        if run.save_plots:
            require_matplotlib()
        paths = collect_video_paths(run.video_paths, run.file_with_video_paths)
        check_unique_stems(paths)
        paths = shard(paths, run.num_shards, run.shard_index)
        if run.runner == "ray":
            # Workers build the extractor; setup problems still come back before any video is touched.
            summary, report_path = run_on_ray(
                paths, extractor_cls, extractor_settings,
                on_extraction=run.on_extraction,
                output_path=run.output_path,
                ray_settings=ray_settings,
                debug=run.debug,
                progress=run.progress,
                with_metadata=run.save_metadata,
                save_plots=run.save_plots,
            )
            return _finish(summary, report_path, stderr)
        # The timeline picture needs the logits.
        extractor = extractor_cls(dataclasses.replace(
            extractor_settings, show_pred=extractor_settings.show_pred or run.save_plots))
        return _run_local(run, extractor, extractor_settings.show_pred, paths, stdout, stderr)
    except DeviceFailure as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_DEVICE_FAILED
    except UserError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_CONFIG


def _run_local(run: RunSettings, extractor: Extractor, show_pred: bool, paths: list[str],
               stdout: TextIO, stderr: TextIO) -> int:
    folder = output_dir(run.output_path, extractor.feature_type, extractor.model_name)
    sink = make_sink(run.on_extraction, run.output_path, extractor.feature_type, extractor.model_name,
                     extractor.feature_dim, stdout, METADATA_KEYS if run.save_metadata else ())
    claims = None
    if isinstance(sink, FileSink):  # workers sharing the folder split the videos (utils/claims.py)
        claims = ClaimBook(sink.path_for, stale_s=run.lock_stale_s)
        try:
            check_writable_folder(sink.folder)
        except SettingsError:
            claims.close()
            raise
    if run.save_plots:
        sink = _WithPlots(sink, folder)
    report_path = report_path_in(folder) if run.on_extraction != "print" else None

    def on_result(result: Any) -> None:
        if show_pred:
            print(f"Predictions for {result.path}:", file=stdout)
            print(format_window_predictions(result.window_bounds, result.logits, extractor.labels),
                  end="", file=stdout, flush=True)
        if run.save_plots:
            random_note = " - RANDOM WEIGHTS" if extractor.weights_source == "random" else ""
            written = save_video_plots(
                folder, result.path, result.features, result.window_bounds, result.fps, result.logits,
                extractor.labels, title=f"{Path(result.path).name} - {extractor.model_name}{random_note}",
            )
            log.info("plots of %s: %s", result.path, ", ".join(map(os.fspath, written)))

    try:
        summary: RunSummary = run_extraction(
            extractor, paths, sink,
            on_result=on_result if show_pred or run.save_plots else None,
            report_path=report_path,
            debug=run.debug,
            progress=run.progress,
            with_metadata=run.save_metadata,
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
