"""scripts/setup_env.sh, run_samples.sh, run_tests.sh, r21d: what they install, where torch comes from.

Fast: the environment is a fake whose ``python -m ...`` only records its arguments (nothing is
installed), ``nvidia-smi`` is a fake that works or fails, and the PyTorch CPU index is a
loopback HTTP server or a closed port. The real install on a fresh copy of the checkout is
the slow test at the end.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "env", "sha256sum", "cut", "tr", "sed", "sort", "comm", "cat", "paste", "rm", "dirname")


@pytest.fixture
def fake(tmp_path: Path):
    """``(venv, run)``: a fake environment and ``run(script, *args, gpu=None, env=...)``.

    ``gpu``: None = no ``nvidia-smi`` on PATH, True = one that works, False = one that fails.
    ``run`` returns ``(completed process, [the fake python's calls other than the probe])``.
    """
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "python_calls.log"
    # -c / stdin scripts (the torch check, the index probe) run for real, without site-packages
    # (so torch is missing unless PYTHONPATH provides one); everything else is only recorded.
    python = venv / "bin" / "python"
    python.write_text(f"""#!{shutil.which('bash')}
echo "$*" >> {log}
case "$1" in -c|-) exec {sys.executable} -S "$@" ;; esac
exit 0
""")
    python.chmod(0o755)

    def run(script: str, *args: str, gpu: bool | None = None, env: dict[str, str] | None = None):
        bin_dir = tmp_path / f"bin-{gpu}"
        if not bin_dir.exists():
            bin_dir.mkdir()
            for tool in TOOLS:  # only these: a real nvidia-smi of the machine stays out of sight
                (bin_dir / tool).symlink_to(shutil.which(tool))
            if gpu is not None:
                (bin_dir / "nvidia-smi").write_text(f"#!{shutil.which('bash')}\nexit {0 if gpu else 9}\n")
                (bin_dir / "nvidia-smi").chmod(0o755)
        log.unlink(missing_ok=True)
        full_env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "R21D_VENV": str(venv),
                    "R21D_TORCH_CPU_INDEX": closed_port_url(), **(env or {})}
        proc = subprocess.run([shutil.which("bash"), str(ROOT / "scripts" / script), *args], env=full_env,
                              capture_output=True, text=True, timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        return proc, [c for c in calls if not c.startswith(("-c ", "- "))]

    return venv, run


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"  # nothing listens there: connection refused


@pytest.fixture
def cpu_index(tmp_path: Path):
    """URL of a loopback index that has a ``torch/`` page."""
    root = tmp_path / "index"
    (root / "whl" / "cpu" / "torch").mkdir(parents=True)
    (root / "whl" / "cpu" / "torch" / "index.html").write_text("<html></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()


def test_without_a_gpu_torch_comes_from_the_cpu_index(fake, cpu_index):
    venv, run = fake
    proc, calls = run("setup_env.sh", gpu=False, env={"R21D_TORCH_CPU_INDEX": cpu_index})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{venv}\n"  # the scripts read the folder from stdout
    assert calls == [f"-m pip install -q torch torchvision --index-url {cpu_index}",
                     f"-m pip install -q -e {ROOT}"]  # the sample run needs no extras
    assert "CPU build" in proc.stderr and "WARNING" not in proc.stderr


def test_an_unreachable_cpu_index_falls_back_to_the_default_index_saying_so_within_seconds(fake):
    _, run = fake
    started = time.monotonic()
    proc, calls = run("setup_env.sh")  # no nvidia-smi at all; the CPU index is a closed port
    assert time.monotonic() - started < 15
    assert proc.returncode == 0, proc.stderr
    assert calls == ["-m pip install -q torch torchvision", f"-m pip install -q -e {ROOT}"]
    assert "WARNING: the PyTorch index http://127.0.0.1:" in proc.stderr
    assert "cannot be reached" in proc.stderr and "default index" in proc.stderr


def test_with_a_gpu_torch_comes_from_the_default_index_without_probing(fake, cpu_index):
    _, run = fake
    proc, calls = run("setup_env.sh", gpu=True)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "-m pip install -q torch torchvision"
    assert "WARNING" not in proc.stderr


def test_an_installed_torch_is_kept_and_a_rerun_installs_nothing(fake, tmp_path):
    venv, run = fake
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    proc, calls = run("setup_env.sh", "--extras", "test", gpu=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert calls == [f"-m pip install -q -e {ROOT}[test]"]
    for extras in ("test", ""):  # what is installed already covers it
        proc, calls = run("setup_env.sh", "--extras", extras, gpu=False, env=env)
        assert proc.returncode == 0 and calls == [] and proc.stdout == f"{venv}\n", proc.stderr
    proc, calls = run("setup_env.sh", "--extras", "ray", gpu=False, env=env)
    assert calls == [f"-m pip install -q -e {ROOT}[ray,test]"]  # extras add up


def test_samples_install_no_extras_tests_add_test_and_ray_when_selected(fake, tmp_path):
    _, run = fake
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    _, calls = run("run_samples.sh", "device=cpu", env=env)
    assert calls == [f"-m pip install -q -e {ROOT}",
                     "main.py feature_type=r21d file_with_video_paths=./sample/sample_video_paths.txt "
                     "show_pred=true device=cpu"]
    _, calls = run("run_tests.sh", "-m", "not ray", "-q", env=env)
    assert calls == [f"-m pip install -q -e {ROOT}[test]", "-m pytest -n 2 -m not ray -q"]  # two test processes
    _, calls = run("run_tests.sh", "-m", "ray", env=env)
    assert calls == [f"-m pip install -q -e {ROOT}[ray,test]", "-m pytest -m ray"]  # one Ray cluster at a time
    _, calls = run("run_tests.sh", "-n", "0", "-q", env=env)
    assert calls[-1] == "-m pytest -n 0 -q"
    _, calls = run("r21d", "--help", env=env)
    assert calls == [f"{ROOT}/main.py --help"]


def test_ci_installs_its_extras_once_and_builds_the_docs(fake, tmp_path):
    venv, _ = fake
    ci_bin = tmp_path / "ci-bin"
    ci_bin.mkdir()
    for tool in TOOLS:
        (ci_bin / tool).symlink_to(shutil.which(tool))
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "__init__.py").write_text("")
    proc = subprocess.run([shutil.which("bash"), str(ROOT / ".ci" / "run")], capture_output=True, text=True,
                          env={"PATH": str(ci_bin), "HOME": str(tmp_path), "R21D_VENV": str(venv),
                               "PYTHONPATH": str(tmp_path / "site")}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [c for c in (tmp_path / "python_calls.log").read_text().splitlines() if c.startswith("-m ")
             or not c.startswith("-")]
    assert calls == [f"-m pip install -q -e {ROOT}[docs,ray,test]", "-m pytest -n 2 --durations=15",
                     "-m pytest -n 2 -m slow --durations=15", "-m pytest -m ray --durations=5",
                     "benchmarks/gpu_check.py --quick --device cpu --out bench_out/gpu_check_ci",
                     "-m mkdocs build --strict --quiet --site-dir bench_out/site"]


# ---------------------------------------------------------------- the real thing (minutes)

_IGNORED_ANYWHERE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")
_IGNORED_AT_THE_ROOT = {"output", "outputs", "multirun", "tmp", "bench_out"}  # run outputs, not sources (utils/outputs is)


def quick_start_ignore(folder: str, names: list[str]) -> set[str]:
    """What a fresh clone would not have: build and cache folders anywhere, run outputs at the top only."""
    ignored = set(_IGNORED_ANYWHERE(folder, names))
    if Path(folder).resolve() == ROOT.resolve():
        ignored |= _IGNORED_AT_THE_ROOT & set(names)
    return ignored


@pytest.mark.slow
def test_readme_quick_start_on_a_fresh_copy(tmp_path):
    """The README's two quick start commands in a fresh copy of the checkout: a real ./.venv."""
    clone = tmp_path / "r21d-features"
    shutil.copytree(ROOT, clone, ignore=quick_start_ignore, symlinks=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "R21D_VENV", "R21D_EXTRAS")}
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)

    # offline here: random weights (the README says so for machines without internet)
    samples = subprocess.run(["bash", "scripts/run_samples.sh", "random_weights=true", "device=cpu", "progress=false"],
                             cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert samples.returncode == 0, samples.stderr[-3000:]
    assert "Summary: 2 done, 0 skipped, 0 failed, of 2 videos" in samples.stderr
    assert samples.stdout.count("Predictions for ") == 2 and samples.stdout.count("Features for ") == 2
    python = clone / ".venv" / "bin" / "python"
    probe = ("import importlib.util as u, torch; "
             "print(torch.version.cuda, *(u.find_spec(m) is not None for m in ('pytest', 'ray', 'nbclient')))")
    cuda, *found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env,
                                  check=True).stdout.split()
    assert found == ["False", "False", "False"]  # no test or ray extras for the samples
    if shutil.which("nvidia-smi") is None:  # the CPU build, or a warning saying why not
        assert cuda == "None" or "WARNING: the PyTorch index" in samples.stderr, samples.stderr

    tests = subprocess.run(["bash", "scripts/run_tests.sh", "tests/test_windows.py", "-q"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=1800)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout
    wrapper = subprocess.run([str(clone / "scripts" / "r21d"), "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert wrapper.returncode == 0 and "on_extraction" in wrapper.stdout, wrapper.stderr
