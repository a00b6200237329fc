"""The outputs guide's HDF5 read-back snippet runs on a merged file, as written."""

from __future__ import annotations

import os
import re

import numpy as np

from tests.conftest import REPO_ROOT
from r21d_features.utils.outputs.hdf5_merge import merge_parts
from r21d_features.utils.outputs.hdf5_sink import Hdf5Sink

GUIDE = (REPO_ROOT / "docs" / "guides" / "outputs.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = GUIDE.index(f"## {title}")
    end = GUIDE.find("\n## ", start + 3)
    return GUIDE[start: end if end >= 0 else None]


def test_the_hdf5_read_back_snippet_runs_on_a_merged_file(tmp_path, monkeypatch):
    folder = tmp_path / "feats" / "r21d" / "r2plus1d_18_16_kinetics"
    sink = Hdf5Sink(folder, "r21d", (10, 512), video_root=str(tmp_path / "videos"), attrs={"crops": "ten"})
    want = np.arange(3 * 10 * 512, dtype=np.float32).reshape(3, 10, 512)
    sink.write(str(tmp_path / "videos" / "cat" / "000.mp4"),
               {"r21d": want, "fps": 30.0, "stack_size": 16, "step_size": 8})
    sink.close()
    merge_parts(folder)
    snippet = re.search(r"```python\n(import h5py.*?)```", section("HDF5: one dataset file"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 (our own docs)
    np.testing.assert_array_equal(scope["feats"], want)
    assert scope["stride"] == 8 and scope["fps"] == 30.0 and scope["video_ids"] == ["cat/000"]
    assert os.path.exists("feats/r21d/r2plus1d_18_16_kinetics/features.h5")
