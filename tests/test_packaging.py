"""``pip install .`` gives a working ``r21d-extract`` command, configs included.

The install goes into a fresh virtual environment. To stay offline and not fetch
torch again, the new environment sees this interpreter's site-packages through a
``.pth`` line (only the dependencies: this project is installed by pip from a
copy of the source tree, and runs from outside any checkout).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_test_video

ROOT = Path(__file__).resolve().parents[1]
# What a source distribution would not carry: builds, environments, outputs.
# Anywhere in the tree; and only at the top (a package such as utils/outputs/ is source).
_IGNORED_ANYWHERE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                           ".pytest_cache", "*.ipynb")
_IGNORED_AT_TOP = {"output", "outputs", "tmp", "tests", "sample", "bench_out", ".whl"}


def IGNORED(folder: str, names: list[str]) -> set[str]:  # noqa: N802 (shutil.copytree's ignore)
    ignored = set(_IGNORED_ANYWHERE(folder, names))
    if Path(folder) == ROOT:
        ignored |= _IGNORED_AT_TOP & set(names)
    return ignored


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # nothing may come from the network
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``bin/`` folder of a fresh venv in which ``pip install .`` ran."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=IGNORED, symlinks=True)
    venv = tmp / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    venv_python = venv / "bin" / "python"
    purelib = subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    dependency_dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib, "r21d_test_dependencies.pth").write_text("\n".join(dict.fromkeys(dependency_dirs)) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "--no-deps",
         "--ignore-installed", "--no-build-isolation", "--no-index", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, env=_clean_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv / "bin"


def _outside_checkout(tmp_path: Path) -> Path:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd


def test_console_command_prints_help_with_every_key(installed, tmp_path):
    proc = subprocess.run([str(installed / "r21d-extract"), "--help"], cwd=_outside_checkout(tmp_path),
                          capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for key in ("model_name: r2plus1d_18_16_kinetics", "on_extraction: print", "save_plots: false",
                "save_metadata: false", "r21d-extract feature_type=r21d"):
        assert key in proc.stdout


@pytest.mark.slow
def test_console_command_extracts_features_from_outside_the_checkout(installed, tmp_path):
    cwd = _outside_checkout(tmp_path)
    write_test_video(cwd / "clip.mp4", num_frames=16)
    proc = subprocess.run(
        [str(installed / "r21d-extract"), "feature_type=r21d", "video_paths=[clip.mp4]", "device=cpu",
         "random_weights=true", "stack_size=8", "step_size=8", "on_extraction=save_numpy",
         "output_path=./feats", "progress=false"],
        cwd=cwd, capture_output=True, text=True, env=_clean_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 done" in proc.stderr
    folder = cwd / "feats" / "r21d" / "r2plus1d_18_16_kinetics"
    assert sorted(p.name for p in folder.iterdir()) == [".clip_r21d.npy.provenance.json", "clip_r21d.npy",
                                                        "run_report.jsonl"]
    features = np.load(folder / "clip_r21d.npy")
    assert features.shape == (2, 512) and features.dtype == np.float32
    # it ran the installed copy, not the checkout's files
    where = subprocess.run([str(installed / "python"), "-c",
                            "import r21d_features.main as m, r21d_features.utils as u; print(m.__file__, u.__file__)"],
                           cwd=cwd, capture_output=True, text=True, env=_clean_env(), check=True).stdout
    assert str(installed.parent) in where and str(ROOT) not in where


def _site_packages(installed: Path) -> Path:
    return Path(subprocess.run([str(installed / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())


def test_install_puts_one_import_name_at_the_top_of_site_packages(installed):
    site_dir = _site_packages(installed)
    [dist_info] = site_dir.glob("r21d_features-*.dist-info")
    records = [line.split(",")[0] for line in (dist_info / "RECORD").read_text().splitlines()]
    top = {r.split("/")[0] for r in records if not r.startswith(("..", dist_info.name)) and "/" in r}
    assert top == {"r21d_features"}
    assert not [r for r in records if "/" not in r]  # no top-level module either (no main.py)
    assert (site_dir / "r21d_features" / "configs" / "feature_type" / "r21d.yaml").is_file()


@pytest.mark.slow
def test_api_and_command_work_beside_a_users_own_utils_and_models(installed, tmp_path):
    """Research repositories have their own utils.py and models/: ours must not clash with them."""
    cwd = _outside_checkout(tmp_path)
    (cwd / "utils.py").write_text("raise ImportError('the user utils.py was imported')\n")
    (cwd / "models").mkdir()
    (cwd / "models" / "__init__.py").write_text("raise ImportError('the user models/ was imported')\n")
    write_test_video(cwd / "clip.mp4", num_frames=16)
    code = (
        "from r21d_features.models.r21d import R21DExtractor\n"
        "ex = R21DExtractor(device='cpu', random_weights=True, stack_size=8, step_size=8)\n"
        "print(ex.extract('clip.mp4')['r21d'].shape)\n"
    )
    api = subprocess.run([str(installed / "python"), "-c", code], cwd=cwd, capture_output=True, text=True,
                         env=_clean_env(), timeout=300)
    assert api.returncode == 0, api.stderr
    assert api.stdout.strip().splitlines()[-1] == "(2, 512)"
    command = subprocess.run(
        [str(installed / "r21d-extract"), "feature_type=r21d", "video_paths=[clip.mp4]", "device=cpu",
         "random_weights=true", "stack_size=8", "step_size=8", "progress=false"],
        cwd=cwd, capture_output=True, text=True, env=_clean_env(), timeout=300,
    )
    assert command.returncode == 0, command.stderr
    assert "max: " in command.stdout
