"""What ``main.py`` runs: plain settings in, exit status out. No Hydra here."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from models import get_extractor_class

from .ffmpeg import FFmpegError
from .path_list import PathListError, check_unique_stems, collect_video_paths, shard
from .predictions import format_window_predictions
from .runner import RunSummary, run_extraction
from .sinks import ON_EXTRACTION_CHOICES, make_sink

log = logging.getLogger(__name__)

# Keys that steer the run; every other key is an argument of the extractor class.
RUN_KEYS = (
    "feature_type", "video_paths", "file_with_video_paths", "on_extraction", "output_path",
    "num_shards", "shard_index", "debug", "progress",
)
EXIT_BAD_CONFIG = 2


class SettingsError(ValueError):
    """A run-level setting is not allowed."""


def check_run_settings(settings: Mapping[str, Any]) -> None:
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


def run_cli(settings: Mapping[str, Any], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run an extraction as the command line does; returns the process exit status.

    0: every video done or skipped; 1: some video failed; 2: bad settings, nothing done.
    """
    settings = dict(settings)
    from models.r21d.weights import WeightsUnavailableError  # noqa: PLC0415 (one error type of the zoo)

    setup_errors = (ValueError, PathListError, WeightsUnavailableError, FFmpegError)
    try:
        check_run_settings(settings)
        paths = collect_video_paths(settings.get("video_paths"), settings.get("file_with_video_paths"))
        check_unique_stems(paths)
        paths = shard(paths, int(settings.get("num_shards", 1)), int(settings.get("shard_index", 0)))
        extractor_cls = get_extractor_class(settings.get("feature_type", "r21d"))
        extractor = extractor_cls(**{k: v for k, v in settings.items() if k not in RUN_KEYS})
    except setup_errors as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_CONFIG

    on_extraction = settings.get("on_extraction", "print")
    output_path = settings.get("output_path", "./output")
    sink = make_sink(on_extraction, output_path, extractor.feature_type, extractor.model_name,
                     extractor.record.feature_dim, stdout)
    report_path = None
    if on_extraction != "print":
        report_path = Path(output_path) / extractor.feature_type / extractor.model_name / "run_report.jsonl"

    def show(result: Any) -> None:
        if result.logits is not None:
            print(f"Predictions for {result.path}:", file=stdout)
            print(format_window_predictions(result.window_bounds, result.logits, extractor.labels),
                  end="", file=stdout, flush=True)

    summary: RunSummary = run_extraction(
        extractor, paths, sink,
        on_result=show if settings.get("show_pred") else None,
        report_path=report_path,
        debug=bool(settings.get("debug", False)),
        progress=bool(settings.get("progress", True)),
    )
    print(summary.format(), file=stderr)
    if report_path is not None:
        print(f"Run report: {os.fspath(report_path)}", file=stderr)
    return summary.exit_code
