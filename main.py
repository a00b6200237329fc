"""Command line: ``python main.py feature_type=r21d video_paths="[a.mp4, b.mp4]"``.

A thin Hydra shell: it composes the config, turns it into plain values and
hands them to :func:`utils.cli.run_cli`, which does the work.
"""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from configs.schema import register_configs, unknown_key_error
from utils.cli import run_cli
from utils.console import configure_logging

register_configs()


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    settings = OmegaConf.to_container(cfg, resolve=True)
    configure_logging(debug=bool(settings.get("debug")))  # log lines never glued to the progress bar
    sys.exit(run_cli(settings))


def cli() -> None:
    """Entry point: ``python main.py ...`` and the installed ``r21d-extract`` console command."""
    error = unknown_key_error(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
