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
):
    """Start the OpenAI-compatible HTTP server."""
    import uvicorn

    from ominix import _blas
    from ominix.api.app import create_app
    from ominix.engine.pool import ModelNotFoundError, ModelPool, parse_keep_alive, parse_memory

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
    table = _table("Model", "Kind", "Memory", "Requests", "Unloads at")
    for card in data["data"]:
        table.add_row(card["id"], card.get("kind", ""), _human_size(card.get("memory_bytes")),
                      str(card.get("active_requests", 0)), card.get("expires_at") or "never")
    for model_id in data.get("loading", []):
        table.add_row(model_id, "", "", "", "loading")
    _print_table(table)
    typer.echo(f"{_human_size(data['resident_bytes'])} of {_human_size(data['memory_budget_bytes'])} budget in use")


# --- store and hub commands (pull, list, show, verify, rm, scan, registry) ---


def _store_fail(error: Exception, code: int = 1):
    """One clear line on stderr, no traceback."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code)


def _store_guard():
    """Context manager turning catalog/store errors into `_store_fail`."""
    import contextlib

    from ominix.hub.store import StoreError
    from ominix.registry import RegistryError

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (RegistryError, StoreError) as error:
            _store_fail(error)

    return guard()


def _human_size(n: int | None) -> str:
    if not n:
        return "-"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _verified_text(value) -> str:
    return {True: "yes", False: "FAILED", None: "-"}[value]


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name != columns[-1])
    return table


def _print_table(table) -> None:
    import sys

    from rich.console import Console

    # Piped output keeps whole rows (no wrapping at 80 columns) so scripts can grep it.
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


@app.command("list")
def list_models(
    show_all: bool = typer.Option(False, "--all", "-a", help="Also list catalog models that are not installed."),
    category: str = typer.Option(None, "--category", "-c", help="Only this category (llm, vlm, asr, tts, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """List installed models (and, with --all, the whole catalog)."""
    import json

    from ominix.hub import store
    from ominix.models import can_run
    from ominix.registry import CATEGORIES, load_catalog

    if category is not None and category not in CATEGORIES:
        _store_fail(f"unknown category '{category}' (one of {', '.join(CATEGORIES)})", 2)
    with _store_guard():
        catalog = load_catalog()
        installed = store.list_installed(catalog)
    if category:
        installed = [m for m in installed if m.entry is not None and m.entry.category == category]
    rows = [{**m.to_dict(), "installed": True, "runnable": can_run(m.entry) if m.entry else None}
            for m in installed]  # fmt: skip
    if show_all:
        have = {m.entry.id for m in installed if m.entry is not None}
        for entry in catalog.by_category(category) if category else catalog.entries:
            if entry.id not in have:
                rows.append({"id": entry.id, "path": None, "size_bytes": entry.size_bytes,
                             "quantization": entry.runtime.get("quantization"), "format": None,
                             "revision": entry.revision, "verified": None, "kind": entry.source_kind,
                             "in_catalog": True, "category": entry.category, "installed": False,
                             "source": entry.repo_id or entry.source.get("url"),
                             "runnable": can_run(entry)})
        rows.sort(key=lambda r: (r["category"] or "~", r["id"]))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No models installed. `ominix list --all` shows the catalog; `ominix pull ID` downloads one.")
        return
    if show_all:
        table = _table("ID", "CATEGORY", "SIZE", "QUANT", "INSTALLED", "VERIFIED", "RUNS", "PATH / SOURCE")
        for r in rows:
            table.add_row(r["id"], r["category"] or "-", _human_size(r["size_bytes"]), r["quantization"] or "-",
                          "yes" if r["installed"] else "no", _verified_text(r["verified"]),
                          {True: "yes", False: "no", None: "-"}[r["runnable"]],
                          r["path"] or r.get("source") or "-")
    else:
        table = _table("ID", "SIZE", "QUANT", "VERIFIED", "PATH")
        for r in rows:
            table.add_row(r["id"], _human_size(r["size_bytes"]), r["quantization"] or "-",
                          _verified_text(r["verified"]), r["path"])
    _print_table(table)


@app.command()
def show(
    model: str = typer.Argument(..., help="Catalog id or alias, or owner/repo."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """Show a model's catalog entry and where (or whether) it is installed."""
    import json

    from ominix.hub import store
    from ominix.registry import load_catalog

    with _store_guard():
        catalog = load_catalog()
        entry = catalog.find(model)
        path = store.model_dir(model, catalog)
        installed = next((m for m in store.list_installed(catalog) if path and m.path == path), None)
    info = entry.to_dict() if entry else {"id": model}
    if entry:
        info["origin"] = entry.origin
    info["installed"] = path is not None
    info["path"] = str(path) if path else None
    if installed:
        info.update(size_on_disk=installed.size_bytes, format=installed.format,
                    detected_quantization=installed.quantization, verified=installed.verified)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    if entry:
        typer.echo(f"{entry.name} ({entry.id})")
        typer.echo(f"  {entry.description}")
        source = entry.repo_id or entry.source.get("url")
        rows = [("category", entry.category), ("architecture", entry.architecture or "-"),
                ("aliases", ", ".join(entry.aliases) or "-"),
                ("source", f"{entry.source_kind}: {source}" + (f"@{entry.revision}" if entry.revision else "")),
                ("size", entry.storage["size_display"]), ("memory", f"{entry.runtime['memory_gb']} GB"),
                ("quantization", entry.runtime.get("quantization") or "-"),
                ("api", f"{entry.runtime['api_type']} as '{entry.runtime['api_model_id']}'"),
                ("requires", ", ".join(entry.requires) or "-"), ("origin", entry.origin)]
        if entry.notes:
            rows.append(("notes", entry.notes))
        if entry.source_kind == "manual":
            rows.append(("place files in", str(entry.local_path)))
            rows.extend(("", f) for f in entry.source["files"])
    else:
        typer.echo(model)
        rows = []
    rows.append(("installed", str(path) if path else "no"))
    if installed:
        rows += [("on disk", f"{_human_size(installed.size_bytes)}, {installed.format}, "
                             f"{installed.quantization or 'unknown precision'}"),
                 ("verified", _verified_text(installed.verified))]
    for key, value in rows:
        typer.echo(f"  {key:<14}{value}")


@app.command()
def verify(
    model: str = typer.Argument(None, help="Catalog id, owner/repo or path; all installed models when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """Check installed files against their hashes and sizes; exits 1 if any model fails."""
    import json

    from ominix.hub import store
    from ominix.registry import load_catalog

    with _store_guard():
        catalog = load_catalog()
        names = [model] if model else [m.id for m in store.list_installed(catalog)]
        reports = [store.verify(name, catalog) for name in names]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        if not reports:
            typer.echo("No models installed.")
        for r in reports:
            if r.ok:
                typer.echo(f"ok      {r.id}  ({r.files_checked} files, {_human_size(r.bytes_checked)})")
            else:
                typer.echo(f"FAILED  {r.id}  ({r.path})", err=True)
                for problem in r.problems:
                    typer.echo(f"        {problem}", err=True)
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


@app.command("rm")
def remove_model(
    model: str = typer.Argument(..., help="Catalog id, owner/repo, or a folder inside the store."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Delete a model's files (only ever inside the Hugging Face cache or the OminiX store)."""
    from ominix.hub import store

    with _store_guard():
        target = store.removal_target(model)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
        if not yes and not typer.confirm(f"Delete {target} ({_human_size(size)})?", default=False):
            typer.echo("Nothing deleted.")
            raise typer.Exit(1)
        removed = store.remove(model)
    for path in removed:
        typer.echo(f"deleted {path}")


@app.command()
def scan(
    directory: str = typer.Argument(..., help="Folder holding models (<owner>/<repo>, model folders, or an HF cache)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be registered; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """Register models already on disk as user catalog entries (files stay where they are)."""
    import json

    from ominix.hub import store

    with _store_guard():
        results = store.scan(directory, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    if not results:
        typer.echo(f"No model folders found under {directory}.")
        return
    table = _table("ACTION", "ID", "FORMAT", "QUANT", "PATH")
    for r in results:
        table.add_row(r.action, r.id, r.format, r.quantization or "-", str(r.path))
    _print_table(table)


registry_app = typer.Typer(help="Check and edit the model catalog (your overlay file).", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("validate")
def registry_validate(file: str = typer.Argument(..., help="A catalog JSON file.")):
    """Validate a catalog file against the schema; exits 1 with the first problem."""
    from ominix import registry

    with _store_guard():
        entries = registry.validate_file(file)
    typer.echo(f"{file}: {len(entries)} entries, valid")


@registry_app.command("add")
def registry_add(
    model_id: str = typer.Argument(..., help="New id (lowercase slug)."),
    repo: str = typer.Option(None, "--repo", help="Hugging Face owner/repo[@revision]."),
    url: str = typer.Option(None, "--url", help="Direct download URL of a single file."),
    sha256: str = typer.Option(None, "--sha256", help="Expected sha256 of the --url file."),
    path: str = typer.Option(None, "--path", help="A model folder already on disk."),
    category: str = typer.Option("llm", "--category", help="llm, vlm, asr, tts, image_gen or embedding."),
    architecture: str = typer.Option(None, "--architecture", help="OminiX module under ominix/models/."),
    name: str = typer.Option(None, "--name", help="Display name."),
):
    """Add (or replace) an entry in your overlay catalog."""
    from ominix import config, registry

    if sum(x is not None for x in (repo, url, path)) != 1:
        _store_fail("give exactly one of --repo, --url or --path", 2)
    if sha256 is not None and url is None:
        _store_fail("--sha256 goes with --url", 2)
    with _store_guard():
        entry = registry.add_user_entry(registry.make_custom_entry(
            model_id, repo_id=repo, url=url, sha256=sha256, path=path, category=category,
            architecture=architecture, name=name))
    typer.echo(f"added '{entry.id}' to {config.user_registry_path()}")


@registry_app.command("remove")
def registry_remove(model_id: str = typer.Argument(..., help="An id in your overlay catalog.")):
    """Remove an entry from your overlay catalog (no files are deleted)."""
    from ominix import config, registry

    with _store_guard():
        registry.remove_user_entry(model_id)
    typer.echo(f"removed '{model_id}' from {config.user_registry_path()}")


@registry_app.command("export")
def registry_export(file: str = typer.Argument(..., help="Where to write your overlay entries.")):
    """Write your overlay entries to a file (to share or back up)."""
    from ominix import registry

    with _store_guard():
        entries = registry.export_user_entries(file)
    typer.echo(f"exported {len(entries)} entries to {file}")


@registry_app.command("import")
def registry_import(file: str = typer.Argument(..., help="A catalog file (or a {\"custom\": [...]} URL list).")):
    """Merge a file's entries into your overlay catalog (same ids are replaced)."""
    from ominix import config, registry

    with _store_guard():
        entries = registry.import_user_entries(file)
    typer.echo(f"imported {len(entries)} entries into {config.user_registry_path()}")


@app.command()
def pull(
    model: str = typer.Argument(..., help="Catalog id, owner/repo\\[@revision], a Hugging Face URL or a file URL."),
    revision: str = typer.Option(None, "--revision", "-r", help="Branch, tag or commit to download."),
    include: list[str] = typer.Option(None, "--include", help="Only files matching this glob (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List files and sizes; download nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print progress events, one JSON object per line."),
):
    """Download a model's weights: resumable, sha256-verified, in parallel."""
    import json
    import sys

    from ominix.hub import download
    from ominix.registry import RegistryError

    def fail(error: Exception, code: int = 1):
        if as_json:
            typer.echo(json.dumps({"event": "error", "error": type(error).__name__, "message": str(error)}))
        else:
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code)

    try:
        if dry_run:
            the_plan = download.plan(model, revision=revision, include=include or None)
            _print_plan(the_plan.event(), as_json)
            return
        if as_json:
            path = download.pull(model, revision=revision, include=include or None,
                                 on_event=_json_lines())
        else:
            with _PullProgress() as progress:
                path = download.pull(model, revision=revision, include=include or None, on_event=progress.on_event)
            typer.echo(str(path))
    except (download.DownloadError, RegistryError) as error:
        fail(error)
    except KeyboardInterrupt:
        print("interrupted: partial files are kept; run the same command again to resume.", file=sys.stderr)
        raise typer.Exit(130)


def _json_lines():
    """An event handler printing one JSON object per line; events come from several threads."""
    import json
    import sys
    import threading

    lock = threading.Lock()

    def print_event(event: dict) -> None:
        with lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    return print_event


def _print_plan(event: dict, as_json: bool) -> None:
    import json

    from ominix.hub.download import human_bytes

    if as_json:
        typer.echo(json.dumps(event))
        return
    for f in event["files"]:
        size = human_bytes(f["size"]) if f["size"] is not None else "unknown size"
        state = " (have)" if f["size"] and f["present"] >= f["size"] else ""
        typer.echo(f"{size:>12}  {f['path']}{state}")
    typer.echo(f"{event['id']}: {len(event['files'])} files, {human_bytes(event['total_bytes'])}, "
               f"{human_bytes(event['remaining_bytes'])} to download -> {event['target']}")


class _PullProgress:
    """Renders pull events as a rich progress bar (bytes, speed, time left) on stderr. The bar starts
    with the plan, so errors raised before it leave a clean stderr."""

    def __enter__(self):
        self.bar = None
        self.files_done = 0
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def on_event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "plan":
            self._start(event)
        elif self.bar is None:
            return
        elif kind == "progress":
            self.bar.update(self.task, completed=event["bytes"])
        elif kind == "file_done":
            self.files_done += 1
            self.bar.update(self.task, description=self._label())
        elif kind == "done":
            self.bar.update(self.task, completed=event.get("total_bytes") or 0)

    def _start(self, event: dict) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.name, self.files = event["id"], len(event["files"])
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        self.task = self.bar.add_task(self._label(), total=event["total_bytes"] or None,
                                      completed=event["total_bytes"] - event["remaining_bytes"])

    def _label(self) -> str:
        return f"{self.name} [{self.files_done}/{self.files} files]"


# --- model commands (run, convert) ---


@app.command()
def convert(
    src: str = typer.Argument(..., help="Hugging Face checkpoint directory (safetensors)."),
    dst: str = typer.Argument(..., help="New directory for the MLX checkpoint (must not exist or be empty)."),
    quantize: bool = typer.Option(False, "-q", "--quantize", help="MLX affine quantization."),
    bits: int = typer.Option(4, "--bits", help="Bits per weight when quantizing: 2, 3, 4, 5, 6 or 8."),
    group_size: int = typer.Option(64, "--group-size", help="Quantization group size: 32, 64 or 128."),
    dtype: str = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 (default: the source's)."),
):
    """Convert a checkpoint to MLX (cast or quantized), in a layout mlx-lm also loads."""
    from ominix.engine.convert import ConvertError
    from ominix.engine.convert import convert as convert_checkpoint
    from ominix.engine.load import LoadError

    try:
        convert_checkpoint(src, dst, quantize=quantize, bits=bits, group_size=group_size, dtype=dtype,
                           log=lambda message: typer.echo(message, err=True))  # fmt: skip
    except (ConvertError, LoadError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


@app.command()
def run(
    model: str = typer.Argument(..., help="Catalog id, owner/repo or a local checkpoint directory."),
    prompt: str = typer.Argument(None, help="Answer this and exit; without it (on a terminal), chat."),
    max_tokens: int = typer.Option(2048, "--max-tokens", min=1, help="Most tokens per answer."),
    temp: float = typer.Option(None, "--temp", help="Sampling temperature (0 = greedy). Default: the model's."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling mass. Default: the model's."),
    seed: int = typer.Option(None, "--seed", help="Seed for reproducible sampling."),
    system: str = typer.Option(None, "--system", help="System prompt."),
    verbose: bool = typer.Option(False, "--verbose", help="Print speed figures after each answer."),
    think: bool = typer.Option(None, "--think/--no-think", help="Turn a model's thinking on or off (Qwen3)."),
):
    """Run a model: answer one prompt (argument or piped stdin) or chat interactively."""
    import sys

    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    elif prompt is not None and not sys.stdin.isatty():
        piped = sys.stdin.read()
        prompt = f"{piped.rstrip()}\n\n{prompt}" if piped.strip() else prompt
    try:
        loaded = _load_for_run(model)
        session = _ChatSession(*loaded, system=system, think=think, verbose=verbose)
        session.params = session.sampling_params(temp, top_p, seed)
        session.max_tokens = max_tokens
    except Exception as error:  # anything from resolving, downloading or loading: one clear line
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
    if prompt is not None:
        try:
            if not session.ask(prompt):
                raise typer.Exit(1)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            raise typer.Exit(130)
        return
    session.interactive()


def _load_for_run(name: str):
    from pathlib import Path

    from ominix import _blas

    _blas.warn_once_if_slow()
    path = Path(name).expanduser()
    if not path.is_dir():
        from ominix.hub.download import ensure_local

        with _PullProgress() as progress:
            path = ensure_local(name, on_event=progress.on_event)
    from ominix.engine.load import load

    return load(path)


class _ChatSession:
    """The conversation behind `ominix run`: history, commands, streaming to the terminal."""

    HELP = (
        "Commands:\n"
        "  /system TEXT   set the system prompt (clears nothing else)\n"
        "  /clear         forget the conversation\n"
        "  /bye           leave (or Ctrl-D)\n"
        "  /?             this help\n"
        "Ctrl-C stops the current answer."
    )

    def __init__(self, model, tokenizer, *, system=None, think=None, verbose=False):
        self.model, self.tokenizer = model, tokenizer
        self.system, self.think, self.verbose = system, think, verbose
        self.history: list[dict] = []
        self.max_tokens = 2048

    def sampling_params(self, temp, top_p, seed):
        from ominix.engine.sample import SamplingParams

        # Unset options fall back to the checkpoint's generation_config.json (what its authors tuned).
        defaults = self.tokenizer.generation_config
        sampled = defaults.get("do_sample", True)
        return SamplingParams(
            temperature=temp if temp is not None else (defaults.get("temperature", 0.7) if sampled else 0.0),
            top_p=top_p if top_p is not None else defaults.get("top_p", 1.0),
            top_k=defaults.get("top_k", 0) or 0,
            seed=seed,
        )

    def prompt(self, messages: list[dict]) -> str:
        if self.tokenizer.chat_template is None:  # a base model: plain continuation of the last message
            return messages[-1]["content"]
        extra = {} if self.think is None else {"enable_thinking": self.think}
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, **extra)

    def ask(self, text: str) -> bool:
        """Answer one user turn, streaming to stdout; keep it in the history. False on failure."""
        import sys

        from ominix.engine.generate import stream_generate

        system = [{"role": "system", "content": self.system}] if self.system else []
        messages = system + self.history + [{"role": "user", "content": text}]
        pieces, last = [], None
        try:
            prompt = self.prompt(messages)
            for last in stream_generate(self.model, self.tokenizer, prompt, self.params, max_tokens=self.max_tokens):
                sys.stdout.write(last.text)
                sys.stdout.flush()
                pieces.append(last.text)
        except ValueError as error:  # a template that rejects the conversation, a bad option
            typer.echo(f"error: {error}", err=True)
            return False
        sys.stdout.write("\n")
        sys.stdout.flush()
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces)}]
        if self.verbose and last is not None:
            self.print_stats(last)
        return True

    def print_stats(self, r) -> None:
        lines = [
            ("prompt eval count", f"{r.prompt_tokens} token(s)"),
            ("prompt eval rate", f"{r.prompt_tps:.2f} tokens/s"),
            ("eval count", f"{r.generation_tokens} token(s)"),
            ("eval rate", f"{r.generation_tps:.2f} tokens/s"),
            ("time to first token", f"{r.ttft * 1000:.1f} ms"),
            ("peak memory", f"{r.peak_memory:.3f} GB"),
        ]
        for name, value in lines:
            typer.echo(f"{name + ':':<21} {value}", err=True)

    def interactive(self) -> None:
        import sys

        typer.echo("Send a message (/? for help)", err=True)
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                sys.stdout.write("\n")
                return
            except KeyboardInterrupt:
                typer.echo("\nUse Ctrl + d or /bye to exit.", err=True)
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            try:
                self.ask(line)
            except KeyboardInterrupt:  # stop this answer; the turn is dropped, the session goes on
                sys.stdout.write("\n")
                typer.echo("(stopped)", err=True)

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, arg = line.partition(" ")
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name == "/clear":
            self.history.clear()
            typer.echo("Cleared session context.", err=True)
        elif name == "/system":
            self.system = arg.strip() or None
            typer.echo("Set system message." if self.system else "Removed system message.", err=True)
        elif name in ("/?", "/help"):
            typer.echo(self.HELP, err=True)
        else:
            typer.echo(f"Unknown command '{name}'. Type /? for help.", err=True)
        return True


# --- bench ---


@app.command()
def bench(
    model: str = typer.Argument(..., help="Catalog id, owner/repo, or a checkpoint directory."),
    prompt_tokens: int = typer.Option(512, "-p", "--prompt-tokens", help="Random prompt length."),
    generation_tokens: int = typer.Option(128, "-g", "--generation-tokens", help="Tokens to generate."),
    trials: int = typer.Option(3, "-n", "--num-trials", help="Timed runs (after one warm-up)."),
    prefill_step_size: int = typer.Option(None, "--prefill-step-size",
                                          help="Prompt chunk size (default: the engine's for this device)."),
    dtype: str = typer.Option(None, "--dtype", help="Compute dtype override (float32, bfloat16, float16)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Measure prompt and generation tokens/sec, time to first token, and peak memory."""
    import json

    from ominix import _blas
    from ominix.bench import BenchError, format_result, run_bench

    _blas.warn_once_if_slow()
    try:
        result = run_bench(model, prompt_tokens, generation_tokens, trials,
                           prefill_step_size=prefill_step_size, dtype=dtype)  # fmt: skip
    except BenchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2) if as_json else format_result(result))

# --- doctor ---


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Check this machine: backend, BLAS, versions, RAM, disk, and which catalog models fit."""
    import json

    from ominix.doctor import diagnose, format_report

    report = diagnose()
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
