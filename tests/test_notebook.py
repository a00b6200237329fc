"""colab_demo.ipynb runs top to bottom, headless, offline (random weights), on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "colab_demo.ipynb"
KERNEL_NAME = "r21d-test-python"


def _kernel_manager(kernel_dir: Path) -> KernelManager:
    """A kernel running this interpreter (whatever kernels the machine has registered)."""
    spec_dir = kernel_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "r21d tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))


def _text_of(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    # The kernel starts in an empty folder (outputs land there, not in the checkout) that
    # sees the sample videos, and imports the project from the checkout, as after an install.
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "sample").symlink_to(ROOT / "sample", target_is_directory=True)
    monkeypatch.setenv("R21D_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # any download attempt would show up here

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, km=_kernel_manager(tmp_path / "kernels"), timeout=240,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError naming the cell when any cell fails

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert "nothing to install" in _text_of(code_cells[0])
    all_text = "\n".join(_text_of(c) for c in code_cells)
    assert "weights: RANDOM" in all_text
    assert "features: (8, 512) float32; logits: (8, 400)" in all_text
    assert "At frames (0, 16)" in all_text and "  Logits | Prob. | Label " in all_text
    images = [out for c in code_cells for out in c.outputs if "image/png" in out.get("data", {})]
    assert len(images) == 2, "expected the timeline and the similarity pictures"
    folder = workdir / "output" / "r21d" / "r2plus1d_18_16_kinetics"
    assert (folder / "bbb_4x3_25fps_r21d.npy").is_file()
    assert (folder / "bbb_4x3_25fps_window_times_s.npy").is_file()
    assert not (tmp_path / "torch_home").exists()


def test_one_marked_setting_and_no_placeholder_links():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in notebook.cells if c.cell_type == "code").source
    statements = [line for line in first_code.splitlines() if line.strip() and not line.startswith("#")]
    assert statements[0] == 'REPO_URL = ""'  # the first thing to see; "": this checkout
    assert "THE ONE SETTING" in first_code.split("REPO_URL")[0]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for text in (NOTEBOOK.read_text(encoding="utf-8"), *(page.read_text(encoding="utf-8") for page in pages)):
        assert "ORG/REPO" not in text  # a link that leads nowhere
        assert "](https://colab.research.google.com" not in text  # no badge or link to a placeholder


def test_outside_a_checkout_without_repo_url_the_first_cell_says_what_to_set(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in notebook.cells if c.cell_type == "code").source
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -S: no site-packages, so the project is not importable (as in a fresh Colab runtime)
    proc = subprocess.run([sys.executable, "-S", "-c", first_code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "REPO_URL is empty" in proc.stderr and "set REPO_URL at the top of this cell" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing cloned or installed
