"""`ominix say`: text to speech into a file (or the speakers), sentence by sentence as it is made."""

from __future__ import annotations

import typer

from ominix.cli.common import app

_PLAYERS = (("afplay", []), ("paplay", []), ("aplay", ["-q"]), ("ffplay", ["-nodisp", "-autoexit", "-loglevel", "quiet"]))


@app.command()
def say(
    text: str = typer.Argument(None, help="What to say; omitted or '-': read stdin (long texts welcome)."),
    model: str = typer.Option(..., "--model", "-m", help="A text-to-speech model: catalog id or checkpoint directory."),
    voice: str = typer.Option(None, "--voice", "-v", help="A named speaker of the model, or a cloned voice."),
    output: str = typer.Option(None, "--output", "-o", help="Write audio here (format from the extension); "
                                                             "without it, play it."),
    fmt: str = typer.Option(None, "--format", help="mp3, opus, aac, flac, wav or pcm (default: from -o, else wav)."),
    instructions: str = typer.Option(None, "--instructions", "-i", help="Style: 'cheerful, a little fast'."),
    language: str = typer.Option(None, "--language", help="The model's language name (default: auto)."),
    speed: float = typer.Option(1.0, "--speed", min=0.25, max=4.0, help="0.25-4.0 (pitch-preserving time-stretch)."),
    temp: float = typer.Option(None, "--temp", help="Sampling temperature (0 = greedy). Default: the model's."),
    seed: int = typer.Option(None, "--seed", help="Seed for reproducible speech."),
):
    """Speak TEXT with a text-to-speech model."""
    import sys

    if text is None or text == "-":
        text = "" if sys.stdin.isatty() else sys.stdin.read()
    if not text.strip():
        typer.echo("error: nothing to say (give TEXT or pipe it on stdin)", err=True)
        raise typer.Exit(2)
    fmt = fmt or (output.rsplit(".", 1)[-1].lower() if output and "." in output else "wav")
    try:
        _say(text, model, voice, output, fmt, instructions, language, speed, temp, seed)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    except Exception as error:  # resolving, loading, a bad voice or format: one clear line
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


def _say(text, model, voice, output, fmt, instructions, language, speed, temp, seed) -> None:
    import shutil
    import tempfile
    import time

    from ominix.cli.common import local_model
    from ominix.engine.audio import voices
    from ominix.engine.audio.encode import AudioEncoder
    from ominix.engine.audio.speak import SpeakJob, load
    from ominix.engine.audio.synth import SynthesisOptions

    encoder = AudioEncoder(fmt, 24000, speed=speed, streaming=False)  # checks fmt and speed first
    path = local_model(model, "say")
    start = time.perf_counter()
    tts, _ = load(path)
    loaded = time.perf_counter()
    cloned = (voices.clone_options(model, voice) if voice else None) or {"voice": voice}
    options = SynthesisOptions(**cloned, instructions=instructions, language=language, temperature=temp, seed=seed)
    encoder = AudioEncoder(fmt, tts.sample_rate, speed=speed, streaming=False)
    player = None if output else next((p for p in _PLAYERS if shutil.which(p[0])), None)
    if not output and player is None:
        output = f"say.{fmt}"
        typer.echo(f"no audio player found; writing {output}", err=True)
    target = output or tempfile.mktemp(suffix=f".{fmt}")
    first = None
    with open(target, "wb") as f:

        class Ticket:  # the job's events go straight to the file
            @staticmethod
            def emit(event) -> None:
                nonlocal first
                first = first or time.perf_counter()
                f.write(encoder.feed(event.samples))

        class Resident:
            pass

        Resident.model = tts
        job = SpeakJob(text, options)
        job.begin(Resident, Ticket)
        try:
            while not job.step():
                pass
        finally:
            job.close()
        f.write(encoder.finish())
    end = time.perf_counter()
    seconds = job.result().seconds
    typer.echo(f"{seconds:.2f} s of audio in {end - loaded:.2f} s (load {loaded - start:.1f} s, first audio "
               f"after {(first or end) - loaded:.2f} s, real-time factor {(end - loaded) / max(seconds, 1e-9):.2f})"
               + (f" -> {output}" if output else ""), err=True)  # fmt: skip
    if player is not None and not output:
        import subprocess

        subprocess.run([player[0], *player[1], target], check=False)
