"""Benchmarks: the kernels against the hardware limits measured in the same run."""
