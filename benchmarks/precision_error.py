"""How far bf16 / fp16 features are from fp32 ones, on the sample videos (or any).

    python -m benchmarks.precision_error --device cpu
    python -m benchmarks.precision_error --device cuda:0 --model-name r2plus1d_34_32_ig65m_ft_kinetics

Prints a markdown table per precision: the largest relative difference to the fp32
features (``max |a - b| / max |b|`` over the video, the tolerance the tests use), and the
median over windows of ``||a - b|| / ||b||``. Random weights (seeded) unless
``--checkpoint-path`` names a real checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from r21d_features.models.r21d.extractor import PRECISIONS, R21DExtractor
from r21d_features.utils.core.console import plural

SAMPLES = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "sample").glob("*.mp4"))


def compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """``(max |a - b| / max |b|, median over windows of ||a - b|| / ||b||)``."""
    max_rel = float(np.abs(other - reference).max() / max(float(np.abs(reference).max()), 1e-12))
    per_window = np.linalg.norm(other - reference, axis=1) / np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
    return max_rel, float(np.median(per_window))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", default=SAMPLES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-name", default="r2plus1d_18_16_kinetics")
    parser.add_argument("--precision", default="bf16,fp16", help="comma-separated, compared with fp32")
    parser.add_argument("--checkpoint-path", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    weights = {"checkpoint_path": args.checkpoint_path} if args.checkpoint_path else {"random_weights": True}

    def extract_all(precision: str) -> tuple[dict[str, np.ndarray], float]:
        extractor = R21DExtractor(args.model_name, device=args.device, precision=precision,
                                  batch_size=args.batch_size, **weights)
        t0 = time.perf_counter()
        feats = {path: result.features for path, result in extractor.extract_many(args.videos)}
        return feats, time.perf_counter() - t0

    reference, seconds = extract_all("fp32")
    lines = [
        f"{args.model_name} on {args.device}, {plural(len(args.videos), 'video')}, "
        f"{'random weights' if not args.checkpoint_path else args.checkpoint_path}",
        "",
        "| precision | max rel err vs fp32 | median per-window rel err | seconds |",
        "|---|---|---|---|",
        f"| fp32 | 0 | 0 | {seconds:.1f} |",
    ]
    for precision in args.precision.split(","):
        if precision not in PRECISIONS:
            parser.error(f"--precision {precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
        feats, seconds = extract_all(precision)
        errors = [compare(reference[p], feats[p]) for p in args.videos if reference[p].size]
        lines.append(f"| {precision} | {max(e[0] for e in errors):.2e} | "
                     f"{float(np.median([e[1] for e in errors])):.2e} | {seconds:.1f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
