"""`ominix serve`, `ominix ps` and `ominix doctor`: the HTTP server and this machine."""

from __future__ import annotations

import typer

from ominix import config
from ominix.cli.common import app, human_size, new_table, print_table


@app.command()
def serve(
    host: str = typer.Option(config.DEFAULT_HOST, help="Address to bind (loopback by default)."),
    port: int = typer.Option(config.DEFAULT_PORT, help="Port to listen on."),
    model: list[str] = typer.Option(
        [], "--model", "-m", help="Model to load at start (catalog id, alias or checkpoint directory); repeatable."
    ),
    api_key: str = typer.Option(
        None, "--api-key", envvar="OMINIX_API_KEY", help="Require 'Authorization: Bearer KEY' (all routes but /health)."
    ),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allowed CORS origin ('*' for any); repeatable."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    models: str = typer.Option(
        None, "--models", help="Comma-separated allow-list: only these models are served (others get 404)."
    ),
    memory_budget: str = typer.Option("70%", help="Memory for resident models: '8GB', '50%' (of RAM), bytes."),
    keep_alive: str = typer.Option("5m", help="How long an idle model stays loaded: '5m', '30s', 0, -1 (forever)."),
    max_batch: int = typer.Option(32, help="Sequences decoded together per model."),
    max_queue: int = typer.Option(256, help="Requests that may wait beyond the batch before 429."),
    request_timeout: float = typer.Option(None, help="Seconds before a request is stopped (504); none by default."),
    prompt_cache: str = typer.Option("1GB", help="Memory for reusable prompt prefixes ('0' disables)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="Also accept this Host header name (besides the bound address and "
        "loopback names; '*' for any); repeatable."),
    allow_load_paths: bool = typer.Option(
        False, "--allow-load-paths", help="Let clients load any checkpoint directory they name (by "
        "default only catalog, installed and --model models)."),
    metrics_open: bool = typer.Option(False, "--metrics-open", help="Serve /metrics without the API key (for a scraper)."),
    image_quantize: int = typer.Option(None, "--image-quantize", help="Quantize image models to 4 or 8 bits at load."),
):
    """Start the OpenAI-compatible HTTP server."""
    import os

    import uvicorn

    if image_quantize is not None:
        if image_quantize not in (4, 8):
            raise typer.BadParameter("4 or 8", param_hint="--image-quantize")
        os.environ["OMINIX_IMAGE_QUANTIZE"] = str(image_quantize)  # read by the image loader

    from ominix import _blas
    from ominix.api.app import create_app
    from ominix.engine.pool import ModelNotFoundError, ModelPool
    from ominix.engine.budget import parse_keep_alive, parse_memory

    _blas.warn_once_if_slow()
    try:
        budget, cache_bytes = parse_memory(memory_budget), parse_memory(prompt_cache)
        idle = parse_keep_alive(keep_alive)
        allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
        pool = ModelPool(memory_budget=budget, keep_alive=idle, allow_only=(allowed or []) + list(model) if allowed else None)
    except (ValueError, ModelNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    from pathlib import Path

    from ominix.hub.names import looks_like_path

    for name in model:
        if looks_like_path(name) and not Path(name).expanduser().is_dir():
            typer.echo(f"error: --model {name}: no such directory", err=True)
            raise typer.Exit(2)
        try:
            pool.register(name)
        except ModelNotFoundError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
    available = [r.id for r in pool.available()]
    typer.echo(f"Models: {', '.join(available)}" if available else "No models installed: run `ominix pull <id>`.")
    if model:
        typer.echo(f"Loading at start: {', '.join(model)}")
    if api_key:
        typer.echo("API key required (Authorization: Bearer ...).")
    warning = exposure_warning(host, api_key)
    if warning:
        typer.echo(warning, err=True)
    application = create_app(pool, api_key=api_key or None, cors_origins=cors_origin or None, preload=model,
                             max_batch=max_batch, max_queue=max_queue, request_timeout=request_timeout,
                             prompt_cache_bytes=cache_bytes, host=host, allowed_hosts=allow_host or None,
                             allow_load_paths=allow_load_paths, metrics_open=metrics_open)
    busy = port_problem(host, port)
    if busy:
        typer.echo(f"error: cannot listen on {host}:{port}: {busy}", err=True)
        raise typer.Exit(1)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:  # bound: only now is "listening" true
                typer.echo(f"OminiX listening on http://{host}:{port}  (OpenAI base URL: http://{host}:{port}/v1)")

    from ominix.api.serving import server_config

    Server(server_config(application, host, port, log_level=log_level)).run()


def port_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be bound (in use, no such address), before models load; None if it can."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return str(e)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            return "the port is in use (another server?); pick another with --port" \
                if e.errno == 98 else e.strerror or str(e)
    return None


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A warning when the server is reachable from other machines and anyone may use it."""
    from ominix.api.guard import is_loopback

    if api_key or is_loopback(host):
        return None
    return (f"warning: binding {host} without --api-key: anyone who can reach this machine can run "
            "models and load or unload them. Add --api-key KEY (or bind 127.0.0.1).")


@app.command()
def ps(
    host: str = typer.Option(config.DEFAULT_HOST, help="Server address."),
    port: int = typer.Option(config.DEFAULT_PORT, help="Server port."),
    api_key: str = typer.Option(None, "--api-key", envvar="OMINIX_API_KEY", help="The server's API key."),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answer as JSON."),
):
    """Show the models a running server has loaded: memory, and when each unloads."""
    import json

    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"http://{host}:{port}/v1/ps", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        typer.echo(f"error: no OminiX server answers on http://{host}:{port} ({e})", err=True)
        raise typer.Exit(1)
    if r.status_code == 401:
        typer.echo(f"error: the server on {host}:{port} requires an API key: pass --api-key KEY or set "
                   "OMINIX_API_KEY" + (" (the key given was refused)" if api_key else ""), err=True)
        raise typer.Exit(1)
    if r.status_code != 200:
        try:
            why = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            why = r.text[:200]
        typer.echo(f"error: the server answered {r.status_code}: {why}", err=True)
        raise typer.Exit(1)
    data = r.json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = new_table("Model", "Kind", "Memory", "Requests", "Unloads at")
    for card in data["data"]:
        table.add_row(card["id"], card.get("kind", ""), human_size(card.get("memory_bytes")),
                      str(card.get("active_requests", 0)), card.get("expires_at") or "never")
    for model_id in data.get("loading", []):
        table.add_row(model_id, "", "", "", "loading")
    print_table(table)
    typer.echo(f"{human_size(data['resident_bytes'])} of {human_size(data['memory_budget_bytes'])} budget in use")



@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Check this machine: backend, BLAS, versions, RAM, disk, and which catalog models fit."""
    import json

    from ominix.doctor import diagnose, format_report

    import shutil
    import sys

    report = diagnose()
    width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else None
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report, width))
