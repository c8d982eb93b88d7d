"""OminiX: local inference on MLX with an OpenAI-compatible server."""

__version__ = "0.1.0"
