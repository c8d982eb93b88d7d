"""Store, hub and catalog commands: pull, list, show, verify, rm, scan, registry, convert."""

from __future__ import annotations

import typer

from ominix.cli.common import (
    PullProgress,
    app,
    fail,
    human_size,
    json_lines,
    new_table,
    print_table,
    store_guard,
    verified_text,
)


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
        fail(f"unknown category '{category}' (one of {', '.join(CATEGORIES)})", 2)
    with store_guard():
        catalog = load_catalog()
        installed = store.list_installed(catalog)
    if category:
        installed = [m for m in installed if m.entry is not None and m.entry.category == category]
    rows = [{**m.to_dict(), "installed": True, "runnable": can_run(m.entry) if m.entry else None}
            for m in installed]  # fmt: skip
    if category in (None, "llm"):
        from ominix.cli.ollama import installed_rows

        rows += installed_rows()
    if show_all:
        have = {m.entry.id for m in installed if m.entry is not None}
        for entry in catalog.by_category(category) if category else catalog.entries:
            if entry.id not in have:
                rows.append({"id": entry.id, "path": None, "size_bytes": entry.size_bytes,
                             "quantization": entry.runtime.quantization, "format": None,
                             "revision": entry.revision, "verified": None, "kind": entry.source_kind,
                             "in_catalog": True, "category": entry.category, "installed": False,
                             "source": entry.repo_id or entry.source.url,
                             "runnable": can_run(entry)})
        rows.sort(key=lambda r: (r["category"] or "~", r["id"]))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No models installed. `ominix list --all` shows the catalog; `ominix pull ID` downloads one.")
        return
    if show_all:
        # Short columns, the long path or repo id last (cut to the terminal, whole when piped).
        table = new_table("ID", "KIND", "SIZE", "QUANT", "HAVE", "OK", "RUNS", "PATH / SOURCE")
        for r in rows:
            table.add_row(r["id"], r["category"] or "-", human_size(r["size_bytes"]), r["quantization"] or "-",
                          "yes" if r["installed"] else "no", verified_text(r["verified"]),
                          {True: "yes", False: "no", None: "-"}[r["runnable"]],
                          r["path"] or r.get("source") or "-")
    else:
        table = new_table("ID", "SIZE", "QUANT", "VERIFIED", "PATH")
        for r in rows:
            table.add_row(r["id"], human_size(r["size_bytes"]), r["quantization"] or "-",
                          verified_text(r["verified"]), r["path"])
    print_table(table)


@app.command()
def show(
    model: str = typer.Argument(..., help="Catalog id or alias, or owner/repo."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """Show a model's catalog entry and where (or whether) it is installed."""
    import json

    from ominix.hub.ollama import claims

    if claims(model):
        from ominix.cli import ollama

        return ollama.show(model, as_json)

    from ominix.hub import store
    from ominix.registry import load_catalog

    with store_guard():
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
    gguf_types = _gguf_types(path) if path else None
    if gguf_types:
        info["gguf"] = gguf_types  # per tensor type: kept as MLX affine or dequantized at load
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    if entry:
        typer.echo(f"{entry.name} ({entry.id})")
        typer.echo(f"  {entry.description}")
        source = entry.repo_id or entry.source.url
        rows = [("category", entry.category), ("architecture", entry.architecture or "-"),
                ("aliases", ", ".join(entry.aliases) or "-"),
                ("source", f"{entry.source_kind}: {source}" + (f"@{entry.revision}" if entry.revision else "")),
                ("size", entry.storage.size_display), ("memory", f"{entry.runtime.memory_gb} GB"),
                ("quantization", entry.runtime.quantization or "-"),
                ("api", f"{entry.runtime.api_type} as '{entry.runtime.api_model_id}'"),
                ("requires", ", ".join(entry.requires) or "-"), ("origin", entry.origin)]
        if entry.notes:
            rows.append(("notes", entry.notes))
        if entry.source_kind == "manual":
            rows.append(("place files in", str(entry.local_path)))
            rows.extend(("", f) for f in entry.source.files)
    else:
        typer.echo(model)
        rows = []
    rows.append(("installed", str(path) if path else "no"))
    if installed:
        rows += [("on disk", f"{human_size(installed.size_bytes)}, {installed.format}, "
                             f"{installed.quantization or 'unknown precision'}"),
                 ("verified", verified_text(installed.verified))]
    if gguf_types:
        rows += [(f"GGUF {kind}", f"{v['tensors']} tensors, {v['loaded_as']}") for kind, v in gguf_types.items()]
    for key, value in rows:
        typer.echo(f"  {key:<14}{value}")


def _gguf_types(path) -> dict | None:
    """How loading treats each tensor type of an installed GGUF file (engine/gguf.py)."""
    from pathlib import Path

    from ominix.engine.gguf import describe, gguf_in, read_gguf

    file = gguf_in(Path(path))
    return describe(read_gguf(file)) if file else None


@app.command()
def verify(
    model: str = typer.Argument(None, help="Catalog id, owner/repo or path; all installed models when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """Check installed files against their hashes and sizes; exits 1 if any model fails."""
    import json

    from ominix.hub import store
    from ominix.hub.verify import verify as verify_files
    from ominix.registry import load_catalog

    with store_guard():
        catalog = load_catalog()
        names = [model] if model else [m.id for m in store.list_installed(catalog)]
        reports = [verify_files(name, catalog) for name in names]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        if not reports:
            typer.echo("No models installed.")
        for r in reports:
            if r.ok:
                typer.echo(f"ok      {r.id}  ({r.files_checked} files, {human_size(r.bytes_checked)})")
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
    from ominix.hub.ollama import claims

    if claims(model):
        from ominix.cli import ollama

        return ollama.remove(model, yes)

    with store_guard():
        target = store.removal_target(model)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
        if not yes and not typer.confirm(f"Delete {target} ({human_size(size)})?", default=False):
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

    from ominix.hub.scan import scan as scan_folders

    with store_guard():
        results = scan_folders(directory, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    if not results:
        typer.echo(f"No model folders found under {directory}.")
        return
    table = new_table("ACTION", "ID", "FORMAT", "QUANT", "PATH")
    for r in results:
        table.add_row(r.action, r.id, r.format, r.quantization or "-", str(r.path))
    print_table(table)


registry_app = typer.Typer(help="Check and edit the model catalog (your overlay file).", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("validate")
def registry_validate(file: str = typer.Argument(..., help="A catalog JSON file.")):
    """Validate a catalog file against the schema; exits 1 with the first problem."""
    from ominix import registry

    with store_guard():
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
        fail("give exactly one of --repo, --url or --path", 2)
    if sha256 is not None and url is None:
        fail("--sha256 goes with --url", 2)
    with store_guard():
        entry = registry.add_user_entry(registry.make_custom_entry(
            model_id, repo_id=repo, url=url, sha256=sha256, path=path, category=category,
            architecture=architecture, name=name))
    typer.echo(f"added '{entry.id}' to {config.user_registry_path()}")


@registry_app.command("remove")
def registry_remove(model_id: str = typer.Argument(..., help="An id in your overlay catalog.")):
    """Remove an entry from your overlay catalog (no files are deleted)."""
    from ominix import config, registry

    with store_guard():
        registry.remove_user_entry(model_id)
    typer.echo(f"removed '{model_id}' from {config.user_registry_path()}")


@registry_app.command("export")
def registry_export(file: str = typer.Argument(..., help="Where to write your overlay entries.")):
    """Write your overlay entries to a file (to share or back up)."""
    from ominix import registry

    with store_guard():
        entries = registry.export_user_entries(file)
    typer.echo(f"exported {len(entries)} entries to {file}")


@registry_app.command("import")
def registry_import(file: str = typer.Argument(..., help="A catalog file (or a {\"custom\": [...]} URL list).")):
    """Merge a file's entries into your overlay catalog (same ids are replaced)."""
    from ominix import config, registry

    with store_guard():
        entries = registry.import_user_entries(file)
    typer.echo(f"imported {len(entries)} entries into {config.user_registry_path()}")


@app.command()
def pull(
    model: str = typer.Argument(..., help="Catalog id, owner/repo\\[@revision], a Hugging Face URL, a file URL or ollama:NAME[:TAG]."),
    revision: str = typer.Option(None, "--revision", "-r", help="Branch, tag or commit to download."),
    include: list[str] = typer.Option(None, "--include", help="Only files matching this glob (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List files and sizes; download nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print progress events, one JSON object per line."),
    insecure: bool = typer.Option(False, "--insecure", help="ollama: names: plain http to the registry."),
):
    """Download a model's weights: resumable, sha256-verified, in parallel."""
    import json
    import sys

    from ominix.hub.ollama import claims

    if claims(model):  # ollama:[HOST[:PORT]/][NAMESPACE/]NAME[:TAG]
        from ominix.cli import ollama

        return ollama.pull(model, insecure=insecure, as_json=as_json)

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
                                 on_event=json_lines())
        else:
            with PullProgress() as progress:
                path = download.pull(model, revision=revision, include=include or None, on_event=progress.on_event)
            typer.echo(str(path))
    except (download.DownloadError, RegistryError) as error:
        fail(error)
    except KeyboardInterrupt:
        print("interrupted: partial files are kept; run the same command again to resume.", file=sys.stderr)
        raise typer.Exit(130)



def _print_plan(event: dict, as_json: bool) -> None:
    import json

    from ominix.hub.names import human_bytes

    if as_json:
        typer.echo(json.dumps(event))
        return
    for f in event["files"]:
        size = human_bytes(f["size"]) if f["size"] is not None else "unknown size"
        state = " (have)" if f["size"] and f["present"] >= f["size"] else ""
        typer.echo(f"{size:>12}  {f['path']}{state}")
    typer.echo(f"{event['id']}: {len(event['files'])} files, {human_bytes(event['total_bytes'])}, "
               f"{human_bytes(event['remaining_bytes'])} to download -> {event['target']}")



@app.command()
def convert(
    src: str = typer.Argument(..., help="Hugging Face checkpoint directory (safetensors), a "
                              "diffusers image pipeline (model_index.json), or a "
                              "CTranslate2 / faster-whisper Whisper directory (model.bin)."),
    dst: str = typer.Argument(..., help="New directory for the MLX checkpoint (must not exist or be empty)."),
    quantize: bool = typer.Option(False, "-q", "--quantize", help="MLX affine quantization."),
    bits: int = typer.Option(4, "--bits", help="Bits per weight when quantizing: 2, 3, 4, 5, 6 or 8."),
    group_size: int = typer.Option(64, "--group-size", help="Quantization group size: 32, 64 or 128."),
    dtype: str = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 (default: the source's)."),
):
    """Convert a checkpoint to MLX (cast or quantized), in a layout mlx-lm also loads."""
    from ominix.engine.audio.ct2 import CT2Error
    from ominix.engine.convert import ConvertError
    from ominix.engine.convert import convert as convert_checkpoint
    from ominix.engine.load import LoadError

    try:
        convert_checkpoint(src, dst, quantize=quantize, bits=bits, group_size=group_size, dtype=dtype,
                           log=lambda message: typer.echo(message, err=True))  # fmt: skip
    except (ConvertError, LoadError, CT2Error) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
