"""Command line: ``python main.py feature_type=r21d video_paths="[a.mp4, b.mp4]"``.

A thin Hydra shell, and the one place that wires a model to a runner: it composes
the config, turns it into plain values and hands them, with the function that
picks the extractor class of a ``feature_type``, to :func:`utils.run.cli.run_cli`.
"""

import sys
from typing import Any, Mapping, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from r21d_features.configs.schema import override_error, register_configs
from r21d_features.models import get_extractor_class
from r21d_features.utils.run.cli import run_cli
from r21d_features.utils.core.console import configure_logging

register_configs()


def run(values: Mapping[str, Any], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """An extraction from plain settings (every key optional); the exit status."""
    return run_cli(values, get_extractor_class, stdout=stdout, stderr=stderr)


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    values = OmegaConf.to_container(cfg, resolve=True)
    configure_logging(debug=bool(values.get("debug")))  # log lines never glued to the progress bar
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as \udcXX, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    sys.exit(run(values))


def cli() -> None:
    """Entry point: ``python main.py ...`` and the installed ``r21d-extract`` console command.

    Every argument is checked against the schema first, so a bad one is one line and exit 2
    (Hydra's own refusals included), before anything is loaded.
    """
    error = override_error(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
