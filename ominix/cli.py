"""The `ominix` command line. Thin: parse arguments, call the library, render progress and tables.

Each command imports what it needs inside its body so that `ominix list` or `ominix pull` never pay
for importing MLX.
"""

from __future__ import annotations

import typer

from ominix import config

app = typer.Typer(
    name="ominix",
    help="Run open models locally on MLX and serve them behind an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Run open models locally on MLX and serve them behind an OpenAI-compatible API."""


@app.command()
def serve(
    host: str = typer.Option(config.DEFAULT_HOST, help="Address to bind (loopback by default)."),
    port: int = typer.Option(config.DEFAULT_PORT, help="Port to listen on."),
):
    """Start the OpenAI-compatible HTTP server."""
    import uvicorn

    from ominix.api.app import create_app

    typer.echo(f"OminiX listening on http://{host}:{port}")
    uvicorn.run(create_app(), host=host, port=port, log_level="info")


# --- store and hub commands (pull, list, show, verify, rm, scan, registry) ---

# --- model commands (run, convert) ---

# --- bench ---

# --- doctor ---


def main() -> None:
    app()


if __name__ == "__main__":
    main()
