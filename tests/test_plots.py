"""save_plots=true: the top-1 timeline and the similarity matrix, drawn from the data."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from r21d_features.models.r21d.zoo import kinetics400_labels
from tests.helpers import MODEL, run_cli_quietly, write_test_video
from r21d_features.utils.outputs.plots import (SIMILARITY_SIZE_PX, TIMELINE_SIZE_PX, cosine_similarity_matrix, save_video_plots,
                         similarity_figure, top1_timeline_figure)

LABELS = kinetics400_labels()


def _data(seed: int = 0, num_windows: int = 6):
    rng = np.random.default_rng(seed)
    bounds = [(i * 8, i * 8 + 16) for i in range(num_windows)]  # overlapping windows
    features = np.abs(rng.normal(size=(num_windows, 512))).astype(np.float32)
    logits = (rng.normal(size=(num_windows, 400)) * 4).astype(np.float32)
    return features, bounds, logits


def _draw(folder: Path, features, bounds, logits, fps: float = 25.0) -> dict[str, np.ndarray]:
    """Both pictures as ``{name: H x W x 3 uint8}``, read back from the PNG files."""
    paths = save_video_plots(folder, "some/dir/clip.mp4", features, bounds, fps, logits, LABELS, title="clip")
    images = {}
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None, f"{path} is not a readable image"
        images[path.name] = image
    return images


def _size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def test_pngs_are_named_after_the_video_and_have_the_documented_size(tmp_path):
    images = _draw(tmp_path, *_data())
    assert set(images) == {"clip_top1_timeline.png", "clip_similarity.png"}
    assert _size(images["clip_top1_timeline.png"]) == TIMELINE_SIZE_PX == (1000, 360)
    assert _size(images["clip_similarity.png"]) == SIMILARITY_SIZE_PX == (600, 540)
    for image in images.values():
        assert image.std() > 10  # a picture, not a blank canvas


def test_pictures_are_drawn_from_the_data(tmp_path):
    features, bounds, logits = _data(seed=0)
    first = _draw(tmp_path / "a", features, bounds, logits)
    again = _draw(tmp_path / "b", features, bounds, logits)
    for name in first:  # same data, same pixels: differences below come from the data
        np.testing.assert_array_equal(first[name], again[name])

    other_features = features.copy()
    other_features[2] = np.abs(np.random.default_rng(9).normal(size=512))
    changed = _draw(tmp_path / "c", other_features, bounds, logits)
    assert not np.array_equal(changed["clip_similarity.png"], first["clip_similarity.png"])
    np.testing.assert_array_equal(changed["clip_top1_timeline.png"], first["clip_top1_timeline.png"])

    other_logits = logits.copy()
    other_logits[1, 123] = other_logits[1].max() + 5  # window 1 gets a new top-1 class
    changed = _draw(tmp_path / "d", features, bounds, other_logits)
    assert not np.array_equal(changed["clip_top1_timeline.png"], first["clip_top1_timeline.png"])
    np.testing.assert_array_equal(changed["clip_similarity.png"], first["clip_similarity.png"])


def test_a_video_shorter_than_one_window_still_gets_both_pictures(tmp_path):
    images = _draw(tmp_path, np.zeros((0, 512), np.float32), [], np.zeros((0, 400), np.float32))
    assert _size(images["clip_top1_timeline.png"]) == TIMELINE_SIZE_PX
    assert _size(images["clip_similarity.png"]) == SIMILARITY_SIZE_PX


def _text_boxes(fig, axis):  # noqa: ANN001
    """Pixel boxes of ``axis``' label and non-empty tick labels, as drawn in the saved PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    renderer = FigureCanvasAgg(fig).get_renderer()  # what save_png renders with
    fig.draw(renderer)
    ticks = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_text()]
    return axis.label.get_window_extent(renderer), ticks


@pytest.mark.parametrize("logit_scale, top1_range", [
    (0.0, (0.002, 0.003)),  # every class alike: top-1 probability 1/400
    (0.5, (0.003, 0.02)),
    (4.0, (0.2, 0.9)),
    (40.0, (0.99, 1.0)),  # confident
])
def test_timeline_labels_fit_inside_the_picture_at_any_probability_scale(logit_scale, top1_range):
    _, bounds, logits = _data()
    logits = logits / 4 * logit_scale
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    top1 = (probs / probs.sum(axis=1, keepdims=True)).max()
    assert top1_range[0] <= top1 <= top1_range[1]
    fig = top1_timeline_figure(bounds, 25.0, logits, LABELS, title="clip")
    ax = fig.axes[0]
    width, height = TIMELINE_SIZE_PX
    for axis in (ax.yaxis, ax.xaxis):
        label, ticks = _text_boxes(fig, axis)
        assert label.x0 >= 0 and label.x1 <= width and label.y0 >= 0 and label.y1 <= height, (axis, label)
        assert all(t.x0 >= 0 and t.y0 >= 0 for t in ticks)
    label, ticks = _text_boxes(fig, ax.yaxis)
    assert ax.yaxis.label.get_text() == "top-1 probability"
    assert label.x1 <= min(t.x0 for t in ticks)  # beside the tick labels, not over them


def test_similarity_labels_fit_with_long_frame_numbers():
    features, _, _ = _data(num_windows=5)
    bounds = [(100000 + i * 16, 100016 + i * 16) for i in range(5)]
    fig = similarity_figure(features, bounds, fps=0.0, title="clip")  # no fps: frame numbers
    label, ticks = _text_boxes(fig, fig.axes[0].yaxis)
    assert label.x0 >= 0 and all(t.x0 >= 0 for t in ticks)
    assert label.x1 <= min(t.x0 for t in ticks)


def test_cosine_similarity_matrix():
    features = np.array([[1, 0, 0], [2, 0, 0], [0, 3, 0], [0, 0, 0]], dtype=np.float32)
    expected = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(cosine_similarity_matrix(features), expected, atol=1e-6)



def test_missing_matplotlib_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, _, err = run_cli_quietly(tmp_path, tmp_path / "never_opened.mp4", save_plots=True)
    assert code == 2
    assert "save_plots=true needs matplotlib" in err and "pip install" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_features_without_plots_are_extracted_again_when_plots_are_asked_for(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4", num_frames=16)
    folder = tmp_path / "out" / "r21d" / MODEL
    code, _, err = run_cli_quietly(tmp_path, video)
    assert code == 0, err
    assert not list(folder.glob("*.png"))

    code, _, err = run_cli_quietly(tmp_path, video, save_plots=True)
    assert code == 0 and "1 done, 0 skipped" in err, err
    assert sorted(p.name for p in folder.glob("*.png")) == ["clip_similarity.png", "clip_top1_timeline.png"]

    code, _, err = run_cli_quietly(tmp_path, video, save_plots=True)
    assert code == 0 and "0 done, 1 skipped" in err, err
