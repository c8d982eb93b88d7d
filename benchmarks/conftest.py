"""Benchmarks import ominix before anything imports mlx.core, so the BLAS preload (ominix/_blas.py)
applies exactly as it does for the CLI and the server."""

import ominix  # noqa: F401
