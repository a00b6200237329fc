"""A deliberately naive oracle, written from the reference behaviour only (not from the product code).

Whole clip in memory, float32 on the CPU, one window per forward pass. It is the naive
reference mode that ``benchmarks/run_benchmark.py`` also times as its speed baseline.
"""

from benchmarks.naive_reference import MEAN, STD, decode_all_rgb, naive_features, preprocess_clip

__all__ = ["MEAN", "STD", "decode_all_rgb", "naive_features", "preprocess_clip"]
