"""`ominix transcribe`: speech to text from the command line, several files per run, with a
progress bar over each file's duration (on stderr, so stdout carries only the transcript)."""

from __future__ import annotations

from pathlib import Path

import typer

from ominix.cli.common import app, fail

EXTENSIONS = {"txt": "txt", "text": "txt", "srt": "srt", "vtt": "vtt", "json": "json"}


def load_recognizer(model: str):
    """(recognizer, path) for a checkpoint directory or an installed catalog id / owner/repo."""
    from ominix import kinds
    from ominix.bench import BenchError, resolve_model
    from ominix.hub.store import StoreError, locate
    from ominix.registry import RegistryError

    try:
        path = resolve_model(model)
    except BenchError as e:
        fail(e)
    try:
        entry = locate(model).entry
    except (RegistryError, StoreError):
        entry = None
    kind = kinds.detect(path, entry)
    if kind.name != "asr":
        fail(kinds.mismatch(model, kind, "`ominix transcribe`"))
    from ominix.engine.audio.asr import load
    from ominix.engine.load import LoadError

    try:
        return load(path)[0], path
    except (LoadError, OSError, ValueError) as e:
        fail(f"cannot load {path}: {e}")


def render(transcript, fmt: str, task: str) -> str:
    import json

    from ominix.engine.audio.formats import render_text, to_verbose_json

    if fmt == "json":
        return json.dumps(to_verbose_json(transcript, task, words=True), ensure_ascii=False, indent=2) + "\n"
    return render_text(transcript, fmt)


@app.command()
def transcribe(
    files: list[str] = typer.Argument(..., help="Audio or video files (wav, flac, mp3, m4a, ogg, opus, webm, ...)."),
    model: str = typer.Option(..., "--model", "-m", help="Catalog id, owner/repo, or a checkpoint directory."),
    fmt: str = typer.Option("txt", "--format", "-f", help="txt, srt, vtt or json (verbose, with word times)."),
    language: str = typer.Option(None, "--language", "-l", help="Spoken language (ISO code); default: detected."),
    translate: bool = typer.Option(False, "--translate", help="Translate the speech to English."),
    prompt: str = typer.Option(None, "--prompt", help="Spelling and style hints (names, jargon)."),
    output_dir: str = typer.Option(None, "--output-dir", "-o", help="Write FILE.<format> here instead of stdout."),
):
    """Transcribe (or translate) speech in audio files."""
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    if fmt not in EXTENSIONS:
        fail(f"--format must be txt, srt, vtt or json, not '{fmt}'")
    from ominix.engine.audio.decode import AudioError, open_audio
    from ominix.engine.audio.transcribe import ProgressEvent, TranscribeJob, run_job
    from ominix.engine.audio.whisper_tokenizer import language_code

    try:
        language = language_code(language)
    except ValueError as e:
        fail(e)
    recognizer, _ = load_recognizer(model)
    task = "translate" if translate else "transcribe"
    failures = 0
    for name in files:
        try:
            stream = open_audio(Path(name).expanduser())
        except AudioError as e:
            typer.echo(f"error: {name}: {e}", err=True)
            failures += 1
            continue
        total = stream.duration or 0.0
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                      TimeRemainingColumn(), transient=True, console=_stderr_console()) as bar:
            task_id = bar.add_task(Path(name).name, total=max(total, 0.1))

            def on_event(event, bar=bar, task_id=task_id):
                if isinstance(event, ProgressEvent):
                    bar.update(task_id, completed=event.seconds_done,
                               total=max(event.seconds_total or event.seconds_done, 0.1))

            try:
                result = run_job(TranscribeJob(stream, language=language, prompt=prompt, task=task,
                                               word_timestamps=fmt == "json"), recognizer, on_event)
            except (AudioError, ValueError) as e:
                typer.echo(f"error: {name}: {e}", err=True)
                failures += 1
                continue
        body = render(result, EXTENSIONS[fmt], task)
        if output_dir:
            out = Path(output_dir).expanduser()
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{Path(name).stem}.{EXTENSIONS[fmt]}"
            target.write_text(body, encoding="utf-8")
            typer.echo(f"{name} -> {target}", err=True)
        else:
            if len(files) > 1 and fmt == "txt":
                sys.stdout.write(f"== {name}\n")
            sys.stdout.write(body)
            sys.stdout.flush()
    if failures:
        raise typer.Exit(1)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
