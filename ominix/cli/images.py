"""`ominix image`: generate (or, with --image, edit) an image on this machine, with a progress bar
over the denoising steps. Runs the same ImageJob the server runs, on this thread."""

from __future__ import annotations

from pathlib import Path

import typer

from ominix.cli.common import app

DEFAULT_MODEL = "flux-klein"
SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise typer.BadParameter(f"expected WIDTHxHEIGHT such as 1024x768, got {size!r}", param_hint="--size")
    return int(width), int(height)


def output_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k + 1}{out.suffix}") for k in range(n)]


@app.command("image")
def image(
    prompt: str = typer.Argument(..., help="What to draw."),
    out: Path = typer.Option(Path("image.png"), "-o", "--output", help="File to write (.png, .jpg, .webp)."),
    model: str = typer.Option(DEFAULT_MODEL, "-m", "--model", help="Catalog id, owner/repo or a local diffusers folder."),
    size: str = typer.Option(None, "--size", help="WIDTHxHEIGHT (default 1024x1024, or the reference's size)."),
    steps: int = typer.Option(None, "--steps", min=1, max=100, help="Denoising steps (default: the model's)."),
    seed: int = typer.Option(None, "--seed", min=0, help="Seed; image k of -n uses seed + k."),
    n: int = typer.Option(1, "-n", min=1, max=8, help="Number of images (files get -1, -2, ... suffixes)."),
    guidance: float = typer.Option(None, "--guidance", help="Guidance scale (default: the model's)."),
    negative: str = typer.Option(None, "--negative", help="Negative prompt (models with guidance)."),
    quantize: int = typer.Option(None, "--quantize", help="Quantize the transformer and text encoder to 4 or 8 bits at load."),
    reference: list[Path] = typer.Option(None, "--image", help="Reference image(s) to edit (FLUX.2)."),
):
    """Generate an image from a prompt (or edit reference images) and save it."""
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise typer.BadParameter("the output must end in .png, .jpg, .jpeg or .webp", param_hint="-o")
    if quantize not in (None, 4, 8):
        raise typer.BadParameter("4 or 8", param_hint="--quantize")
    width, height = parse_size(size)
    try:
        result, name = _generate(prompt, model, width, height, steps, seed, n, guidance, negative,
                                 quantize, reference or [])  # fmt: skip
    except Exception as error:  # resolving, downloading, loading, a bad size: one clear line
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
    from ominix.engine.image.output import encode_image

    for k, path in enumerate(output_paths(out, n)):
        meta = {"prompt": prompt, "seed": result.seed + k, "steps": result.steps,
                "size": f"{result.width}x{result.height}", "model": name,
                "guidance_scale": result.guidance}  # fmt: skip
        path.write_bytes(encode_image(result.images[k], fmt, None, meta))
        typer.echo(f"wrote {path} ({result.width}x{result.height}, seed {result.seed + k})")


def _generate(prompt, model, width, height, steps, seed, n, guidance, negative, quantize, references):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ominix import _blas
    from ominix.cli.common import local_model
    from ominix.engine.image.job import ImageJob, ImageRequest, Progress as StepDone, run_job
    from ominix.engine.image.output import decode_image
    from ominix.engine.image.pipeline import Options, load_image_pipeline

    _blas.warn_once_if_slow()
    path = local_model(model, "image")
    pixels = [decode_image(Path(p).read_bytes()) for p in references]
    request = ImageRequest(prompt, n=n, width=width, height=height, steps=steps, seed=seed,
                           guidance=guidance, negative_prompt=negative, references=pixels)  # fmt: skip
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:  # fmt: skip
        task = bar.add_task("loading", total=None)
        pipe = load_image_pipeline(path, Options(quantize=quantize))

        class Ticket:
            def emit(self, event):
                if isinstance(event, StepDone):
                    bar.update(task, description="denoising", completed=event.step, total=event.steps)

        bar.update(task, description="encoding prompt")
        result = run_job(ImageJob(request), pipe, Ticket())
    return result, model
