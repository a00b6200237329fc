"""Top-5 Kinetics-400 predictions per window, in the reference's text layout."""

from __future__ import annotations

from typing import Sequence

import numpy as np

TOP_K = 5


def top_k(logits_row: np.ndarray, k: int = TOP_K) -> list[tuple[int, float, float]]:
    """``[(class_index, logit, softmax_prob), ...]`` best first, for one ``(num_classes,)`` row."""
    logits_row = np.asarray(logits_row, dtype=np.float64)
    shifted = logits_row - logits_row.max()
    probs = np.exp(shifted) / np.exp(shifted).sum()
    order = np.argsort(-logits_row, kind="stable")[:k]
    return [(int(i), float(logits_row[i]), float(probs[i])) for i in order]


def format_window_predictions(
    window_bounds: Sequence[tuple[int, int]], logits: np.ndarray, labels: Sequence[str]
) -> str:
    """For each window: ``At frames (start, end)``, a header, five rows, a blank line."""
    blocks = []
    for (start, end), row in zip(window_bounds, logits):
        lines = [f"At frames ({start}, {end})", "  Logits | Prob. | Label "]
        lines += [f"{logit:8.3f} | {prob:.3f} | {labels[idx]}" for idx, logit, prob in top_k(row)]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) + ("\n" if blocks else "")
