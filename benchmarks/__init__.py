"""Benchmark set, naive reference mode and the side-by-side speed benchmark (see BENCHMARKS.md)."""
