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
    from ominix.engine.pool import (
        ModelNotFoundError,
        ModelPool,
        parse_keep_alive,
        parse_memory,
    )

    _blas.warn_once_if_slow()
    try:
        budget, cache_bytes = parse_memory(memory_budget), parse_memory(prompt_cache)
        idle = parse_keep_alive(keep_alive)
        allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
        pool = ModelPool(memory_budget=budget, keep_alive=idle, allow_only=(allowed or []) + list(model) if allowed else None)
    except (ValueError, ModelNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    for name in model:
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
    typer.echo(f"OminiX listening on http://{host}:{port}  (OpenAI base URL: http://{host}:{port}/v1)")
    application = create_app(pool, api_key=api_key or None, cors_origins=cors_origin or None, preload=model,
                             max_batch=max_batch, max_queue=max_queue, request_timeout=request_timeout,
                             prompt_cache_bytes=cache_bytes)
    uvicorn.run(application, host=host, port=port, log_level=log_level)


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
    if r.status_code != 200:
        typer.echo(f"error: the server answered {r.status_code}: {r.text[:200]}", err=True)
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

    report = diagnose()
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
