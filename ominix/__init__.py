"""OminiX: local inference on MLX with an OpenAI-compatible server."""

__version__ = "0.1.0"

# Before anything imports mlx.core: give MLX's Linux CPU backend an optimized BLAS (see _blas.py).
from ominix import _blas  # noqa: E402

_blas.preload()
