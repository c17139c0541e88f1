"""Synthetic chunk files: kept for the modules and benchmarks that import it; the code lives in fakes.py."""

from fakes import I_IR105, compute_stats, make_chunk, write_chunks

__all__ = ["I_IR105", "compute_stats", "make_chunk", "write_chunks"]
