"""The `ollama:` names in `pull`, `run`, `show` and `rm` (hub/ollama.py does the work), and the
commands Ollama users expect beside `ps`: `stop` (unload from a running server) and `cp`."""

from __future__ import annotations

import json
import sys

import typer

from ominix import config
from ominix.cli.common import app
from ominix.hub import ollama


def _fail(error: Exception, as_json: bool = False):
    if as_json:
        typer.echo(json.dumps({"error": str(error)}))
    else:
        typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


def _printer(as_json: bool):
    """Ollama's pull statuses as JSON lines, or one stderr line per status change."""
    last = {"status": None}

    def emit(event: dict):
        if as_json:
            typer.echo(json.dumps(event))
            return
        status = event["status"]
        if status != last["status"]:
            last["status"] = status
            size = f" ({event['total']} bytes)" if "total" in event else ""
            print(f"{status}{size}", file=sys.stderr)

    return emit


def pull(model: str, *, insecure: bool = False, as_json: bool = False):
    from ominix.hub.sources import DownloadError

    try:
        path = ollama.pull(model, insecure=insecure, on_event=_printer(as_json))
    except (DownloadError, ollama.OllamaNameError) as error:
        _fail(error, as_json)
    except KeyboardInterrupt:
        print("interrupted: partial blobs are kept; run the same pull again to resume.",
              file=sys.stderr)  # fmt: skip
        raise typer.Exit(130)
    if not as_json:
        typer.echo(str(path))


def local_or_pull(model: str):
    """The folder of an installed Ollama model, pulling it first when needed."""
    path = ollama.local_model(model)
    return path if path is not None else ollama.pull(model, on_event=_printer(False))


def installed_rows() -> list[dict]:
    """`ominix list` rows for the models pulled from Ollama registries (no MLX, no GGUF read)."""
    rows = []
    for name in ollama.installed():
        folder = ollama.local_model(str(name))
        if folder is None:
            continue
        info = json.loads((folder / "ollama.json").read_text())
        rows.append({"id": str(name), "path": str(folder), "size_bytes": info.get("size"),
                     "quantization": None, "format": "gguf", "revision": info.get("digest"),
                     "verified": None, "kind": "ollama", "in_catalog": False, "category": "llm",
                     "installed": True, "runnable": True})  # fmt: skip
    return rows


def show(model: str, as_json: bool = False):
    try:
        name = ollama.parse_name(model)
        folder = ollama.local_model(model)
    except ollama.OllamaNameError as error:
        _fail(error, as_json)
    if folder is None:
        _fail(ValueError(f"model '{name.short()}' not found; `ominix pull {name}` first"), as_json)
    info = json.loads((folder / "ollama.json").read_text())
    from ominix.engine.gguf import describe, gguf_config, read_gguf

    file = read_gguf(folder / "model.gguf")
    info.update(path=str(folder), gguf=describe(file),
                architecture=file.metadata.get("general.architecture"))  # fmt: skip
    try:
        info["config"] = {k: v for k, v in gguf_config(file).items() if not isinstance(v, dict)}
    except ValueError as error:
        info["config"] = {"error": str(error)}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(name.short())
    rows = [("architecture", info["architecture"]), ("path", info["path"]),
            ("size", f"{info['size']} bytes"), ("digest", info["digest"]),
            ("parameters", json.dumps(info["params"])), ("system", info.get("system") or "-")]
    rows += [(f"tensors {kind}", f"{v['tensors']}, {v['loaded_as']}")
             for kind, v in info["gguf"].items()]  # fmt: skip
    for key, value in rows:
        typer.echo(f"  {key:<16}{value}")
    if info.get("template"):
        typer.echo("  template")
        for line in info["template"].splitlines():
            typer.echo(f"    {line}")


def remove(model: str, yes: bool):
    from ominix.hub.sources import DownloadError

    try:
        name = ollama.parse_name(model)
        if ollama.read_manifest(name) is None:
            raise DownloadError(f"model '{name.short()}' not found")
        if not yes and not typer.confirm(f"Delete {name.short()}?", default=False):
            typer.echo("Nothing deleted.")
            raise typer.Exit(1)
        removed = ollama.remove(model)
    except (DownloadError, ollama.OllamaNameError) as error:
        _fail(error)
    for path in removed:
        typer.echo(f"deleted {path}")


# ---- commands Ollama users expect: stop, cp ----------------------------------------------------


@app.command()
def stop(
    model: str = typer.Argument(..., help="The loaded model to unload (as `ominix ps` shows it)."),
    host: str = typer.Option(config.DEFAULT_HOST, help="Server address."),
    port: int = typer.Option(config.DEFAULT_PORT, help="Server port."),
    api_key: str = typer.Option(None, "--api-key", envvar="OMINIX_API_KEY", help="The server's API key."),
):
    """Unload a model from a running server now (or when its running requests finish)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"http://{host}:{port}/v1/models/{model}/unload"
    try:
        r = httpx.post(url, headers=headers, timeout=30)
    except httpx.HTTPError as e:
        _fail(RuntimeError(f"no OminiX server answers on http://{host}:{port} ({e})"))
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        _fail(RuntimeError(message))
    status = r.json().get("status")
    typer.echo({"unloaded": f"unloaded {model}", "pending": f"{model} unloads when its requests finish",
                "not_loaded": f"{model} was not loaded"}.get(status, status))  # fmt: skip


@app.command("cp")
def copy_model(
    source: str = typer.Argument(..., help="A model pulled from an Ollama registry (ollama:NAME[:TAG])."),
    destination: str = typer.Argument(..., help="The new name, e.g. mymodel:v1."),
):
    """Copy a pulled Ollama model under another name (the blobs are shared, not copied)."""
    from ominix.hub.sources import DownloadError

    try:
        ollama.copy(source, destination)
    except (DownloadError, ollama.OllamaNameError) as error:
        _fail(error)
    typer.echo(f"copied {ollama.parse_name(source).short()} to {ollama.parse_name(destination).short()}")
