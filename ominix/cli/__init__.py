"""The `ominix` command line. Thin: parse arguments, call the library, render progress and tables.

A module per area registers its commands on the one typer app (`common.app`). Each command imports
what it needs inside its body so that `ominix list` or `ominix pull` never pay for importing MLX.
"""

from __future__ import annotations

from ominix.cli import chat, images, models, ollama, server, speech, tts  # noqa: F401  (each registers its commands)
from ominix.cli.common import app


@app.callback()
def _root() -> None:
    """Run open models locally on MLX and serve them behind an OpenAI-compatible API."""


def main() -> None:
    app()


__all__ = ["app", "main"]
