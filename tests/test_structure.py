"""The shape of the code: layers and cycles (import-linter), one import name per file, a light
start, and cuDNN settings that stay inside our own forward passes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from r21d_features.models.r21d.cudnn import tuned_convolutions
from tests.conftest import REPO_ROOT

PRODUCT_FOLDERS = ("configs", "models", "utils")


def _python(code: str, cwd: Path = REPO_ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_import_linter_contracts_hold():
    """pyproject.toml's [tool.importlinter]: no upward import between layers, no cycle anywhere."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "lint-imports is missing: pip install '.[test]'"
    proc = subprocess.run([lint, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_every_product_file_loads_under_one_name():
    """Import every module of the product (and the tests' helpers); no file may be loaded under
    two names (say ``utils.core.errors`` beside ``r21d_features.utils.core.errors``: two
    copies of every class, and an ``except`` that misses the other copy's errors)."""
    modules = ["r21d_features.main"]
    for folder in PRODUCT_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join(("r21d_features", *parts)))
    tops = {*PRODUCT_FOLDERS, "tests", "main.py"}
    proc = _python(f"""
        import importlib, json, os, sys
        import tests.conftest, tests.helpers
        for name in {modules!r}:
            importlib.import_module(name)
        root = os.path.realpath({str(REPO_ROOT)!r})
        names = {{}}
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            real = os.path.realpath(file) if file and os.path.isabs(file) else ""
            top = os.path.relpath(real, root).split(os.sep)[0] if real.startswith(root + os.sep) else ""
            if top in {tops!r}:  # the product's and the tests' own files (not a .venv inside the checkout)
                names.setdefault(real, []).append(name)
        print(json.dumps(names))
    """)
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout)
    assert len(names) >= len(modules)
    twice = {file: sorted(n) for file, n in names.items() if len(n) > 1}
    assert not twice, twice
    outside = sorted(n for ns in names.values() for n in ns if n.split(".")[0] not in ("r21d_features", "tests"))
    assert not outside, outside


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["feature_type=r21d", "stak_size=4"], 2),
    (["feature_type=r21d", "stack_size=0"], 2),
    (["feature_type=r21d", "stack_size=1.5"], 2),
    (["feature_type=r21d", "device=tpu"], 2),
    (["feature_type=r21d", "on_extraction=save_parquet"], 2),
])
def test_help_and_setting_errors_answer_without_torch(argv, code):
    proc = _python(f"""
        import io, sys
        from r21d_features.main import run_command
        out, err = io.StringIO(), io.StringIO()
        try:
            status = run_command({argv!r}, out, err)
        except SystemExit as exc:  # Hydra's --help
            status = exc.code or 0
        heavy = [m for m in ("torch", "torchvision", "cv2", "av", "numba") if m in sys.modules]
        print("STATUS", status, "HEAVY", ",".join(heavy) or "-")
        print(err.getvalue(), file=sys.stderr)
    """)
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"STATUS {code} HEAVY -", proc.stdout[-2000:] + proc.stderr
    if code == 2:
        assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_cudnn_autotuning_is_on_only_inside_our_forward_passes():
    cuda = torch.device("cuda")  # (a device object: no GPU is needed to flip the switch)
    saved = torch.backends.cudnn.benchmark
    try:
        for before in (False, True):
            torch.backends.cudnn.benchmark = before
            with tuned_convolutions(cuda):
                assert torch.backends.cudnn.benchmark is True
            assert torch.backends.cudnn.benchmark is before
        torch.backends.cudnn.benchmark = False
        with pytest.raises(RuntimeError), tuned_convolutions(cuda):
            raise RuntimeError("a failing batch")
        assert torch.backends.cudnn.benchmark is False
        with tuned_convolutions(torch.device("cpu")):
            assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


def _sink_members() -> set[str]:
    from r21d_features.utils.outputs.sinks import Sink

    return {n for n in [*vars(Sink), *Sink.__annotations__] if not n.startswith("_")}


def test_every_sink_implements_the_whole_sink_protocol(tmp_path):
    pytest.importorskip("h5py")
    pytest.importorskip("pyarrow")
    from r21d_features.utils.outputs.hdf5_sink import Hdf5Sink
    from r21d_features.utils.outputs.sinks import make_sink
    from r21d_features.utils.run.cli import _WithPlots

    members = _sink_members()
    assert {"folder", "needs_metadata", "claim_path", "output_paths", "is_done", "stale_differences",
            "with_provenance", "write", "pending", "close"} <= members
    entries = {"model_name": "m"}
    sinks = {kind: make_sink(kind, str(tmp_path), "r21d", "m", 512, sys.stdout)
             for kind in ("print", "save_numpy", "save_pickle", "save_hdf5", "save_parquet")}
    sinks.update({f"{k} with provenance": s.with_provenance(entries) for k, s in list(sinks.items())})
    sinks["plots"] = _WithPlots(sinks["save_numpy with provenance"], tmp_path, None)
    for name, sink in sinks.items():
        missing = sorted(m for m in members if not hasattr(sink, m))
        assert not missing, f"{name} lacks {missing}"
        saves = sink.folder is not None
        assert (sink.claim_path("a.mp4") is not None) is saves, name
        assert bool(sink.output_paths("a.mp4")) is saves, name
        assert sink.is_done("a.mp4") is False and sink.stale_differences("a.mp4") == [], name
    assert isinstance(sinks["save_hdf5"], Hdf5Sink) and sinks["save_hdf5"].needs_metadata
    for sink in sinks.values():
        sink.close()


def test_no_seam_is_probed_with_getattr_or_hasattr():
    """Seams (sinks, sources, decoders, extractors) are protocols: asked, never probed."""
    import re

    probe = re.compile(r"\b(getattr|hasattr)\((self\.)?(sink|source|decoder|reader|extractor|ex)\b")
    found = []
    for folder in PRODUCT_FOLDERS:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if probe.search(line):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not found, found


def test_the_python_api_names_import_from_the_package():
    import r21d_features.models.r21d as api

    for name in api.__all__:
        assert getattr(api, name) is not None, name
