"""Command line: ``python main.py feature_type=r21d video_paths="[a.mp4, b.mp4]"``.

A thin shell, and the one place that wires a model to a runner: it checks and composes
the arguments once (Hydra's compose API, against the typed schema of configs/schema.py),
turns them into plain values and hands them, with the functions that give a
``feature_type``'s settings and extractor classes, to :func:`utils.run.cli.run_cli`.
Hydra's own flags (``--help``, ``--cfg job``, ``-m``, ...) go to Hydra's application.
Nothing here imports torch: ``--help`` and a bad argument answer at once.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence, TextIO

from r21d_features.configs.schema import compose_values, register_configs
from r21d_features.models import get_extractor_class, get_settings_class
from r21d_features.utils.core.console import command_logging

EXIT_BAD_CONFIG = 2


def run(values: Mapping[str, Any], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """An extraction from plain settings (every key optional); the exit status."""
    from r21d_features.utils.run.cli import run_cli  # noqa: PLC0415 (the runner loads once the arguments are read)

    return run_cli(values, get_settings_class, get_extractor_class,
                   stdout=sys.stdout if stdout is None else stdout, stderr=sys.stderr if stderr is None else stderr)


def run_command(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """What ``python main.py ARGV`` does, in this process; the exit status.

    A bad argument is one ``error:`` line and exit 2; Hydra's flags are answered by Hydra.
    """
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    argv = list(argv)
    values, error = compose_values(argv)
    if error:
        print(f"error: {error}", file=stderr)
        return EXIT_BAD_CONFIG
    if values is None:  # a Hydra flag: Hydra's application answers it
        return _hydra_app(argv)
    with command_logging(debug=bool(values.get("debug")), stream=stderr):  # log lines never glued to the bar
        return run(values, stdout, stderr)


def _hydra_app(argv: list[str]) -> int:
    import hydra  # noqa: PLC0415 (only for Hydra's own flags)

    register_configs()
    results: list[int] = []

    @hydra.main(version_base="1.3", config_path="configs", config_name="config")
    def app(cfg: Any) -> None:  # -m / --multirun: one run per combination
        from omegaconf import OmegaConf  # noqa: PLC0415

        values = OmegaConf.to_container(cfg, resolve=True)
        with command_logging(debug=bool(values.get("debug"))):
            results.append(run(values))

    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        app()
    finally:
        sys.argv = saved
    return max(results, default=0)


def cli() -> None:
    """Entry point: ``python main.py ...`` and the installed ``r21d-extract`` console command."""
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as \udcXX, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    sys.exit(run_command(sys.argv[1:]))


if __name__ == "__main__":
    cli()
