"""Fixtures of the reliability tests: a fixed model, and small generated clips.

Every clip is tiny (<= 80x60, <= 16 frames; the 4K one has 8 frames) and the
model runs one 2-frame window per clip, so the folder stays fast on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from r21d_features.models.r21d import R21DExtractor
from tests.reliability.reliability_helpers import BATCH, MODEL, STACK, STEP, make_clip, torch_threads


@pytest.fixture(scope="session")
def checkpoint_file(checkpoints) -> Path:
    """Fixed random r2plus1d_18 weights (tests/conftest.py), so separate processes compute the same features."""
    return checkpoints[MODEL]


@pytest.fixture(scope="session")
def extractor(checkpoint_file) -> R21DExtractor:
    """The model every in-process test shares (cpu, one thread as in the subprocesses)."""
    return R21DExtractor(model_name=MODEL, device="cpu", stack_size=STACK, step_size=STEP, batch_size=BATCH,
                         checkpoint_path=str(checkpoint_file), decode_workers=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Same thread count as the CLI subprocesses (OMP_NUM_THREADS=1), so floats match bit for bit."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def good_clips(tmp_path_factory) -> list[Path]:
    """Twelve distinct good clips (different test patterns and sizes)."""
    folder = tmp_path_factory.mktemp("good")
    patterns = ["testsrc", "testsrc2", "smptebars", "rgbtestsrc", "mandelbrot", "cellauto"]
    return [make_clip(folder / f"clip{i:02d}.mp4", size=("64x48", "80x60")[i % 2], pattern=patterns[i % 6],
                      extra=("-vf", f"hue=h={i * 30}"))
            for i in range(12)]


@pytest.fixture(scope="session")
def reference(extractor, good_clips) -> dict[str, np.ndarray]:
    """Features of each good clip extracted on its own: what every run must reproduce (by file stem)."""
    with torch_threads(1):
        return {p.stem: extractor.extract(p)["r21d"] for p in good_clips}
