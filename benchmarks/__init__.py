"""Benchmark set, reference flow and the side-by-side speed benchmark (see docs/benchmarks.md)."""
