"""What ``main.py`` runs: flat settings in, exit status out. No Hydra here, and no model:
``main.py`` hands in the function that gives the extractor class of a ``feature_type``."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Protocol, TextIO

from r21d_features.utils.run.object_claims import claim_book_for
from r21d_features.utils.core.console import video_heading, write_block
from r21d_features.utils.core.errors import DeviceFailure, SettingsError, UserError
from r21d_features.utils.core.object_store import is_object_url, set_storage_options
from r21d_features.utils.core.shard_names import shown_name
from r21d_features.utils.outputs.storage import output_location, storage_of
from r21d_features.utils.outputs.output_paths import check_unique_outputs
from r21d_features.utils.outputs.parquet_sink import import_pyarrow
from r21d_features.utils.video.path_list import collect_video_paths, shard
from r21d_features.utils.video.ffmpeg import sweep_partials
from r21d_features.utils.outputs.plots import plot_paths, require_matplotlib, save_video_plots
from r21d_features.utils.outputs.predictions import format_window_predictions
from r21d_features.utils.outputs.provenance import check_existing_outputs, with_provenance
from r21d_features.utils.run.runner import RunSummary, report_path_in, run_extraction
from r21d_features.utils.outputs.metadata import METADATA_KEYS
from r21d_features.utils.core.safe_fs import remove_empty_dirs
from r21d_features.utils.core.settings import ExtractorSettings, split_settings
from r21d_features.utils.run.settings import RaySettings, RunSettings
from r21d_features.utils.core.processes import kill_children
from r21d_features.utils.run.signals import RunInterrupted, stop_on_signals
from r21d_features.utils.outputs.sinks import Sink, make_sink, output_dir
from r21d_features.utils.video.decoders import quiet_decoder_logs

log = logging.getLogger(__name__)

EXIT_BAD_CONFIG = 2
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, what a program killed by the closed pipe would give
RESUME_HINT = "re-run the same command to resume"
EXIT_DEVICE_FAILED = 3  # the device broke mid-run: the run stopped; the same command resumes


class Extractor(Protocol):
    """What the command line needs of an extractor (see models.r21d.R21DExtractor)."""

    feature_type: str
    model_name: str
    feature_dim: int
    feature_shape: tuple[int, ...]  # one window's features: (512,), or (num_crops, 512)
    output_attrs: Mapping[str, str]  # what saved files record about the run (model, crops)
    labels: list[str]
    weights_source: str  # the weights file, or "random"
    weights_id: str  # "sha256:<hex>" of the weights file, or "random"

    def provenance(self) -> dict[str, Any]: ...  # what the numbers depend on (utils/outputs/provenance.py)

    def extract_many(self, video_paths: Iterable[str]) -> Iterator[tuple[str, object]]: ...


class ExtractorClass(Protocol):
    """An extractor class: its settings dataclass, and an instance made from one."""

    feature_type: str
    Settings: type

    def __call__(self, settings: ExtractorSettings) -> Extractor: ...


class _WithPlots:
    """A sink whose videos only count as done when their plots exist too (the plots are
    drawn by the run's ``on_result`` hook, before the features are written)."""

    def __init__(self, sink: Sink, plot_dir: Path, video_root: str | None) -> None:
        self.sink, self.plot_dir, self.video_root = sink, plot_dir, video_root
        self.folder = sink.folder
        self.needs_metadata = sink.needs_metadata

    def claim_path(self, video_path: str) -> Path | None:
        return self.sink.claim_path(video_path)

    def output_paths(self, video_path: str) -> list[Path]:
        """The wrapped sink's files of a video (for sweeping a killed writer's leftovers)."""
        return self.sink.output_paths(video_path)

    def stale_differences(self, video_path: str) -> list[str]:
        return self.sink.stale_differences(video_path)

    def with_provenance(self, entries: Mapping[str, Any]) -> "_WithPlots":
        return _WithPlots(self.sink.with_provenance(entries), self.plot_dir, self.video_root)

    def write(self, video_path: str, feats: Mapping[str, Any]) -> list[Path]:
        return self.sink.write(video_path, feats)

    def pending(self) -> Collection[str]:
        return self.sink.pending()

    def is_done(self, video_path: str) -> bool:
        plots = plot_paths(self.plot_dir, video_path, self.video_root).values()
        return self.sink.is_done(video_path) and all(p.is_file() for p in plots)

    def close(self) -> None:
        self.sink.close()


def check_writable_folder(folder: str | os.PathLike, key: str = "output_path") -> None:
    """Create ``folder`` (a folder, or an object-store prefix) and a file in it, or raise
    :class:`SettingsError` saying why not."""
    location = output_location(folder)
    storage_of(location).check_writable(location, key)


def check_folders_differ(run: RunSettings, extractor_settings: ExtractorSettings) -> None:
    out, tmp = run.output_path, extractor_settings.tmp_path
    if out is None or tmp is None or is_object_url(out):
        return
    if Path(out).resolve() == Path(tmp).resolve():
        raise SettingsError(
            f"output_path and tmp_path are both {out!r}: temporary files would mix with features; "
            "give them different folders"
        )


def run_cli(
    values: Mapping[str, Any],
    settings_class_for: Callable[[str], type],
    extractor_class_for: Callable[[str], ExtractorClass],
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """Run an extraction as the command line does; returns the process exit status.

    ``values``: every key of the command line (``feature_type`` plus the fields of
    :class:`~utils.run.settings.RunSettings`, :class:`~utils.run.settings.RaySettings` and the
    extractor's settings), missing ones at their defaults.
    0: every video done or skipped; 1: some video failed; 2: bad settings, nothing done;
    130 / 143: stopped by SIGINT / SIGTERM (summary printed, claims released);
    141: stdout was closed (e.g. ``| head``), the run stopped quietly.
    """
    try:
        with stop_on_signals():
            return _run_cli(dict(values), settings_class_for, extractor_class_for, stdout, stderr)
    except RunInterrupted as exc:
        kill_children()
        summary = getattr(exc, "partial_summary", None)
        try:
            if summary is not None:
                print(summary.format(), file=stderr)
            print(f"Interrupted by {exc.signal_name}: {RESUME_HINT}", file=stderr, flush=True)
        except OSError:
            pass
        return exc.exit_code
    except BrokenPipeError:
        _silence_closed_streams()
        return EXIT_STDOUT_CLOSED


def _silence_closed_streams() -> None:
    """Point stdout and stderr at /dev/null, so nothing (not even Python's final flush) complains."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):  # a stream without a descriptor (tests)
            pass
    os.close(devnull)


def _run_cli(values: dict[str, Any], settings_class_for: Callable[[str], type],
             extractor_class_for: Callable[[str], ExtractorClass], stdout: TextIO, stderr: TextIO) -> int:
    try:
        # Every setting is checked before the model's code (torch) is imported: a bad one answers at once.
        feature_type = values.pop("feature_type", "r21d")
        run, ray_settings, extractor_settings = split_settings(
            values, [RunSettings, RaySettings, settings_class_for(feature_type)])
        set_storage_options(run.storage_options)  # object-store inputs (utils/core/object_store.py)
        check_folders_differ(run, extractor_settings)
        if run.save_plots:
            require_matplotlib()
        if run.on_extraction == "save_parquet":
            import_pyarrow()  # a missing pyarrow answers before the video list is read or torch loads
        paths = collect_video_paths(run.video_paths, run.file_with_video_paths)
        check_unique_outputs(paths, run.video_root)
        paths = shard(paths, run.num_shards, run.shard_index)
        quiet_decoder_logs(run.debug)
        extractor_cls = extractor_class_for(feature_type)
        if run.runner == "ray":
            from r21d_features.utils.run.ray_runner import run_on_ray  # noqa: PLC0415 (Ray and torch load here)

            if is_object_url(run.output_path) and run.on_extraction != "print":
                check_writable_folder(run.output_path)  # a missing bucket stops here, not in every worker

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
                video_root=run.video_root,
            )
            return _finish(summary, report_path, stderr)
        # The timeline picture needs the logits.
        extractor = extractor_cls(dataclasses.replace(
            extractor_settings, show_pred=extractor_settings.show_pred or run.save_plots))
        with _tmp_folder(extractor_settings.tmp_path, extractor.feature_type, extractor.model_name):
            return _run_local(run, extractor, extractor_settings.show_pred, paths, stdout, stderr)
    except DeviceFailure as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_DEVICE_FAILED
    except UserError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_CONFIG


class _tmp_folder:  # noqa: N801
    """Around a run: first remove what killed runs left in ``<tmp_path>/<feature_type>/<model>``
    (partial re-encodes), and at the end the folders that stay empty (``tmp_path`` itself
    only if this run created it)."""

    def __init__(self, tmp_path: str, feature_type: str, model_name: str) -> None:
        self.root = Path(tmp_path)
        self.folder = self.root / feature_type / model_name
        self.top = self.root / feature_type if self.root.exists() else self.root

    def __enter__(self) -> None:
        for leftover in sweep_partials(self.folder):
            log.info("removed %s, left by a run that was killed", leftover)

    def __exit__(self, *exc: object) -> None:
        remove_empty_dirs(self.folder, self.top)


def _run_local(run: RunSettings, extractor: Extractor, show_pred: bool, paths: list[str],
               stdout: TextIO, stderr: TextIO) -> int:
    folder = output_dir(run.output_path, extractor.feature_type, extractor.model_name)
    sink = make_sink(run.on_extraction, run.output_path, extractor.feature_type, extractor.model_name,
                     extractor.feature_shape, stdout, METADATA_KEYS if run.save_metadata else (),
                     run.video_root, extractor.output_attrs)
    claims = None
    if sink.folder is not None:  # workers sharing the folder split the videos (utils/run/claims.py)
        claims = claim_book_for(sink.folder, sink.claim_path, stale_s=run.lock_stale_s)
        try:
            check_writable_folder(sink.folder)
            # Skip only outputs made with the same settings; others stop the run here (utils/outputs/provenance.py).
            sink = with_provenance(sink, extractor.provenance())
            check_existing_outputs(sink, paths, run.overwrite)
        except SettingsError:
            claims.close()
            raise
    if run.save_plots:
        sink = _WithPlots(sink, folder, run.video_root)
    report_path = report_path_in(folder) if run.on_extraction != "print" else None

    def on_result(result: Any) -> None:
        if show_pred:
            write_block(video_heading("Predictions", result.path) + "\n"
                        + format_window_predictions(result.window_bounds, result.logits, extractor.labels),
                        stdout, end="")
        if run.save_plots:
            random_note = " - RANDOM WEIGHTS" if extractor.weights_source == "random" else ""
            written = save_video_plots(
                folder, result.path, result.centre_features, result.window_bounds, result.fps, result.logits,
                extractor.labels, title=f"{Path(shown_name(result.path)).name} - {extractor.model_name}{random_note}",
                video_root=run.video_root,
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
            report_extra={"weights": extractor.weights_id},
        )
    finally:
        sink.close()
        if claims is not None:
            claims.close()
    if extractor.weights_id == "random":
        log.warning("random_weights=true: these features come from a RANDOM network and mean nothing")
    return _finish(summary, report_path, stderr)


def _finish(summary: RunSummary, report_path: object | None, stderr: TextIO) -> int:
    print(summary.format(), file=stderr)
    if report_path is not None:
        print(f"Run report: {report_path}", file=stderr)
    return summary.exit_code
