"""`ominix run` (one prompt or an interactive chat) and `ominix bench`."""

from __future__ import annotations

import typer

from ominix.cli.common import app


@app.command()
def run(
    model: str = typer.Argument(..., help="Catalog id, owner/repo, a local checkpoint directory or a .gguf file."),
    prompt: str = typer.Argument(None, help="Answer this and exit; without it (on a terminal), chat."),
    max_tokens: int = typer.Option(2048, "--max-tokens", min=1, help="Most tokens per answer."),
    temp: float = typer.Option(None, "--temp", help="Sampling temperature (0 = greedy). Default: the model's."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling mass. Default: the model's."),
    seed: int = typer.Option(None, "--seed", help="Seed for reproducible sampling."),
    system: str = typer.Option(None, "--system", help="System prompt."),
    verbose: bool = typer.Option(False, "--verbose", help="Print speed figures after each answer."),
    think: bool = typer.Option(None, "--think/--no-think", help="Turn a model's thinking on or off (Qwen3)."),
    image: list[str] = typer.Option(None, "--image", help="A picture for the first question (repeat for "
                                    "several); vision models only."),
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
        system = system or getattr(loaded[1], "default_system", None)  # an Ollama SYSTEM layer
        session = _ChatSession(*loaded, system=system, think=think, verbose=verbose)
        session.params = session.sampling_params(temp, top_p, seed)
        session.max_tokens = max_tokens
        for file in image or ():
            session.attach(file)
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

    from ominix import _blas, kinds
    from ominix.cli.common import local_model
    from ominix.engine.load import load
    from ominix.hub.ollama import claims

    _blas.warn_once_if_slow()
    if claims(name):  # ollama:[HOST[:PORT]/][NAMESPACE/]NAME[:TAG]
        from ominix.cli.ollama import local_or_pull

        return load(local_or_pull(name))
    file = Path(name).expanduser()
    if file.suffix == ".gguf" and file.is_file():  # a GGUF file runs as it is
        return load(file)
    path = local_model(name, "run")
    if kinds.detect(path).name == "vlm":
        from ominix.engine.vlm import load as load_vlm

        model, tokenizer = load_vlm(path)
        model.image_processor_path = path
        return model, tokenizer
    return load(path)


def _line_editing():
    """Arrow keys, Ctrl-A/E and a history (OMINIX_HOME/history, 1000 lines) for input(), through
    the standard readline module; returns the function that saves the history."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: plain input() still works
        return lambda: None
    from ominix import config

    path = config.ominix_home() / "history"
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass

    return save


class _ChatSession:
    """The conversation behind `ominix run`: history, commands, streaming to the terminal."""

    HELP = (
        "Commands:\n"
        "  /system TEXT   set the system prompt (clears nothing else)\n"
        "  /image PATH    attach a picture to the next message (vision models)\n"
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
        from ominix.engine.llm.generate import ConversationCache

        self.conversation = ConversationCache(model)  # earlier turns are not prefilled again
        self.pending: list = []  # images attached to the next message
        self.images: list = []  # every image in the history, in prompt order

    def attach(self, file: str) -> None:
        """Read a picture for the next message (a clear error for a text model or a bad file)."""
        from ominix.engine.images import ImageError, decode_image, processor_for

        if not hasattr(self.model, "encode_image"):
            raise ValueError(f"{self.model.model_type} is a chat model; it does not take images: use a vision model")
        try:
            with open(file, "rb") as f:
                data = f.read()
            processed = processor_for(self.model.image_processor_path)(decode_image(data))
        except (OSError, ImageError) as e:
            raise ValueError(f"{file}: {e}") from None
        self.pending.append(processed)

    def sampling_params(self, temp, top_p, seed):
        from ominix.engine.llm.sample import sampling_params

        # The server's rule: unset options take the checkpoint's generation_config.json.
        return sampling_params(self.tokenizer.generation_config, {"temperature": temp, "top_p": top_p, "seed": seed})

    def prompt(self, messages: list[dict]) -> str:
        if self.tokenizer.chat_template is None:  # a base model: plain continuation of the last message
            return messages[-1]["content"]
        extra = {} if self.think is None else {"enable_thinking": self.think}
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, **extra)

    def ask(self, text: str) -> bool:
        """Answer one user turn, streaming to stdout; keep it in the history. False on failure."""
        import sys

        from ominix.engine.llm.generate import encode_prompt, stream_generate

        system = [{"role": "system", "content": self.system}] if self.system else []
        question = {"role": "user", "content": text}
        if self.pending and not hasattr(self.model, "place_images"):  # Prismatic puts the picture itself
            question["content"] = [{"type": "image"} for _ in self.pending] + [{"type": "text", "text": text}]
        messages = system + self.history + [question]
        images = self.images + self.pending
        pieces, tokens, last = [], [], None
        try:
            ids = encode_prompt(self.tokenizer, self.prompt(messages))
            model, cache, cached = self.model, None, 0
            if images:  # the images' positions are part of the prompt: no cache reuse across turns
                model, ids = self._with_images(ids, images)
                self.conversation.reset()
            elif ids:
                cache, cached = self.conversation.prepare(ids)
            for last in stream_generate(model, self.tokenizer, ids, self.params, max_tokens=self.max_tokens,
                                        cache=cache, cached=cached):
                sys.stdout.write(last.text)
                sys.stdout.flush()
                pieces.append(last.text)
                tokens.append(last.token)
        except ValueError as error:  # a template that rejects the conversation, a bad option
            typer.echo(f"error: {error}", err=True)
            return False
        except BaseException:  # Ctrl-C mid-answer: the cache may hold half a step
            self.conversation.reset()
            raise
        if not images:
            self.conversation.record(ids + tokens)
        sys.stdout.write("\n")
        sys.stdout.flush()
        self.history += [question, {"role": "assistant", "content": "".join(pieces)}]
        self.images, self.pending = images, []
        if self.verbose and last is not None:
            self.print_stats(last)
        return True

    def _with_images(self, ids: list[int], images: list):
        from ominix.engine.vlm import VisionPrompt, WithMedia, expand_prompt

        ids = expand_prompt(self.model, ids, images)
        return WithMedia(self.model, VisionPrompt(self.model, ids, images).encode_all()), ids

    def print_stats(self, r) -> None:
        lines = [
            ("prompt eval count", f"{r.prompt_tokens - r.cached_tokens} token(s), {r.cached_tokens} cached"),
            ("prompt eval rate", f"{r.prompt_tps:.2f} tokens/s"),
            ("eval count", f"{r.generation_tokens} token(s)"),
            ("eval rate", f"{r.generation_tps:.2f} tokens/s"),
            ("time to first token", f"{r.ttft * 1000:.1f} ms"),
            ("peak memory", f"{r.peak_memory:.3f} GB"),
        ]
        for name, value in lines:
            typer.echo(f"{name + ':':<21} {value}", err=True)

    def interactive(self) -> None:

        history = _line_editing()
        typer.echo("Send a message (/? for help)", err=True)
        try:
            self._loop()
        finally:
            history()

    def _loop(self) -> None:
        import sys

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
            self.images, self.pending = [], []
            typer.echo("Cleared session context.", err=True)
        elif name == "/system":
            self.system = arg.strip() or None
            typer.echo("Set system message." if self.system else "Removed system message.", err=True)
        elif name == "/image":
            try:
                self.attach(arg.strip())
                typer.echo(f"Attached {arg.strip()} to the next message.", err=True)
            except ValueError as error:
                typer.echo(f"error: {error}", err=True)
        elif name in ("/?", "/help"):
            typer.echo(self.HELP, err=True)
        else:
            typer.echo(f"Unknown command '{name}'. Type /? for help.", err=True)
        return True



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
    audio: str = typer.Option(None, "--audio", help="Speech recognition models: the audio file to transcribe."),
):
    """Measure prompt and generation tokens/sec, time to first token, and peak memory; for a speech
    recognition model (with --audio), the real-time factor, first-segment latency and peak memory."""
    import json

    from ominix import _blas
    from ominix.bench import BenchError, format_asr_result, format_result, is_asr, resolve_model, run_asr_bench, run_bench

    _blas.warn_once_if_slow()
    try:
        if is_asr(model, resolve_model(model)):
            result = run_asr_bench(model, audio, trials)
            typer.echo(json.dumps(result, indent=2) if as_json else format_asr_result(result))
            return
        result = run_bench(model, prompt_tokens, generation_tokens, trials,
                           prefill_step_size=prefill_step_size, dtype=dtype)  # fmt: skip
    except BenchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2) if as_json else format_result(result))
