"""Benchmark scripts behind `rfcls bench`; results are written to docs/benchmarks/."""
