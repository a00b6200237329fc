"""Nothing we read can run code: no shell, weights_only loads, numpy-only unpickling of outputs."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest

from r21d_features.models.r21d.weights import WeightsUnavailableError, load_state_dict
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.outputs.sinks import FileSink, load_feature_file

from tests.conftest import REPO_ROOT
from tests.reliability.reliability_helpers import FEATURE_DIM, MODEL


class MakesFolder:
    """Unpickling this calls ``os.mkdir(path)``: a harmless stand-in for arbitrary code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def python_sources(with_tests: bool = True) -> list:
    skip = {".git", ".venv", "build", "dist", "tmp", "output", "outputs"} | (set() if with_tests else {"tests"})
    return [p for p in REPO_ROOT.rglob("*.py") if not skip.intersection(p.relative_to(REPO_ROOT).parts)]


def calls(pattern: str, with_tests: bool = True) -> list[str]:
    """``file:line: text`` of every line of our Python code matching ``pattern``."""
    rx = re.compile(pattern)
    return [f"{p.relative_to(REPO_ROOT)}:{i}: {line.strip()}" for p in python_sources(with_tests)
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if rx.search(line) and not line.lstrip().startswith("#")]


def test_no_shell_strings_anywhere():
    assert python_sources()  # the scan sees the code
    # written split so that this file does not match itself
    assert calls(r"shell\s*=\s*" + "True|os\\.system\\(|os\\.popen\\(|getoutput\\(|getstatusoutput\\(") == []


def test_every_torch_load_is_weights_only():
    loads = calls(r"torch\.load\(")
    assert loads, "expected the weights loader"
    assert [c for c in loads if "weights_only=True" not in c] == []


def test_product_code_never_unpickles_outside_the_restricted_unpickler():
    pattern = r"pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
    assert calls(pattern, with_tests=False) == []


@pytest.mark.parametrize("fmt", ["pkl", "npy"])
def test_malicious_output_file_is_not_executed_and_is_extracted_again(tmp_path, extractor, good_clips, reference, fmt):
    marker = tmp_path / "code_ran"
    sink = FileSink(tmp_path / "out", "r21d", MODEL, fmt, FEATURE_DIM)
    video = str(good_clips[0])
    planted = sink.path_for(video)
    planted.parent.mkdir(parents=True)
    if fmt == "pkl":
        planted.write_bytes(pickle.dumps(MakesFolder(str(marker))))
    else:
        np.save(planted, np.array([MakesFolder(str(marker))], dtype=object), allow_pickle=True)

    summary = run_extraction(extractor, [video], sink, progress=False)
    assert not marker.exists()
    assert [o.status for o in summary.outcomes] == ["done"]  # not taken for a finished output
    np.testing.assert_array_equal(load_feature_file(planted), reference["clip00"])


@pytest.mark.parametrize("bad_array", [np.zeros((3, 512), np.float64), np.zeros((3, 400), np.float32),
                                       np.zeros((512,), np.float32)])
def test_output_of_the_wrong_dtype_or_shape_is_extracted_again(tmp_path, extractor, good_clips, reference, bad_array):
    sink = FileSink(tmp_path / "out", "r21d", MODEL, "pkl", FEATURE_DIM)
    video = str(good_clips[1])
    sink.path_for(video).parent.mkdir(parents=True)
    sink.path_for(video).write_bytes(pickle.dumps(bad_array))
    assert not sink.is_done(video)
    run_extraction(extractor, [video], sink, progress=False)
    np.testing.assert_array_equal(load_feature_file(sink.path_for(video)), reference["clip01"])


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "weights.pth"
    checkpoint.write_bytes(pickle.dumps({"conv.weight": MakesFolder(str(marker))}, protocol=2))
    with pytest.raises(WeightsUnavailableError, match="cannot load weights file"):
        load_state_dict(checkpoint)
    assert not marker.exists()
