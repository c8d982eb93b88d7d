"""The tokens/sec harness behind `ominix bench` and benchmarks/.

Like mlx-lm's benchmark: random prompt ids (no tokenizer needed), greedy decoding with no EOS stop,
one short warm-up run, then `trials` timed runs reported as medians.

    TTFT            seconds from the call to the first generated token (prefill + one step)
    prompt tok/s    prompt tokens / TTFT
    decode tok/s    tokens after the first / time between the first and the last token
    peak memory     mx.get_peak_memory() during a trial, weights included (GB, 1e9 bytes)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

METRICS = ("prompt_tps", "generation_tps", "ttft_s", "peak_memory_gb")


class BenchError(Exception):
    """A benchmark that cannot run; the message says why."""


def resolve_model(ref: str) -> Path:
    """A checkpoint directory or GGUF file, or the installed directory of a catalog id / owner/repo."""
    path = Path(ref).expanduser()
    if path.is_dir() or path.suffix == ".gguf" and path.is_file():
        return path
    from ominix.hub.store import StoreError, model_dir
    from ominix.registry import RegistryError

    try:
        found = model_dir(ref)
    except (RegistryError, StoreError) as e:
        raise BenchError(str(e)) from None
    if found is None and ref.startswith(("/", "~", ".")):
        raise BenchError(f"{ref}: no such directory")
    if found is None:
        raise BenchError(f"'{ref}' is not installed; run `ominix pull {ref}` first")
    return found


def check_benchable(name: str, path: Path) -> None:
    """Refuse a model whose kind `ominix bench` does not measure, naming what serves it."""
    from ominix import kinds
    from ominix.hub.store import StoreError, locate
    from ominix.registry import RegistryError

    try:
        entry = locate(name).entry
    except (RegistryError, StoreError):
        entry = None
    kind = kinds.detect(path, entry)
    if "bench" not in kind.verbs or kind.name == "asr":  # ASR models: run_asr_bench
        raise BenchError(str(kinds.mismatch(name, kind, "`ominix bench`")))


def random_prompt(vocab_size: int, n: int, seed: int) -> list[int]:
    """The prompt ids for trial `seed` (benchmarks/bench_llm.py draws the same ones for mlx-lm)."""
    return np.random.default_rng(seed).integers(0, vocab_size, n).tolist()


def _vocab_size(config: dict) -> int:
    vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if not vocab:
        raise BenchError("config.json has no vocab_size; `ominix bench` needs a language model")
    return int(vocab)


def time_generation(model, prompt: list[int], generation_tokens: int, prefill_step_size: int) -> dict:
    """One timed greedy generation of exactly `generation_tokens` tokens."""
    import mlx.core as mx

    from ominix.engine.llm.generate import generate_step
    from ominix.engine.llm.sample import Sampler, SamplingParams

    sampler = Sampler(SamplingParams(temperature=0.0, seed=0))
    mx.reset_peak_memory()
    start = time.perf_counter()
    first = last = start
    count = 0
    steps = generate_step(model, prompt, sampler, prefill_step_size=prefill_step_size,
                          max_tokens=generation_tokens)  # fmt: skip
    for count, _ in enumerate(steps, start=1):  # generate_step hands out host ints: tokens are ready
        last = time.perf_counter()
        if count == 1:
            first = last
    if count != generation_tokens:
        raise BenchError(f"the engine produced {count} tokens, expected {generation_tokens}")
    ttft = first - start
    return {
        "ttft_s": ttft,
        "prompt_tps": len(prompt) / ttft,
        "generation_tps": (count - 1) / (last - first) if count > 1 else 0.0,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
    }


def run_bench(
    ref: str,
    prompt_tokens: int = 512,
    generation_tokens: int = 128,
    trials: int = 3,
    *,
    prefill_step_size: int | None = None,
    dtype: str | None = None,
    warmup: bool = True,
) -> dict:
    """Load `ref` once, warm up, time `trials` runs; medians plus every trial, as a JSON-ready dict."""
    for name, value in (("prompt tokens", prompt_tokens), ("generation tokens", generation_tokens),
                        ("trials", trials), ("prefill step size", prefill_step_size or 1)):  # fmt: skip
        if value < 1:
            raise BenchError(f"{name} must be >= 1, got {value}")
    path = resolve_model(ref)
    check_benchable(ref, path)

    import mlx.core as mx

    from ominix import _blas
    from ominix.engine.gguf import gguf_in, load_gguf_model
    from ominix.engine.load import LoadError, load_model

    start = time.perf_counter()
    try:
        gguf = gguf_in(path)
        model, config = load_gguf_model(gguf, dtype=dtype) if gguf else load_model(path, dtype=dtype)
    except (LoadError, OSError, ValueError) as e:
        raise BenchError(f"cannot load {path}: {e}") from None
    load_s = time.perf_counter() - start
    vocab = _vocab_size(config)
    if prefill_step_size is None:
        from ominix.engine.llm.generate import default_prefill_step_size

        prefill_step_size = default_prefill_step_size()

    if warmup:  # short: it only has to build the kernels and buffers once
        time_generation(model, random_prompt(vocab, min(prompt_tokens, 64), 1000), min(generation_tokens, 8),
                        prefill_step_size)  # fmt: skip
    runs = [
        time_generation(model, random_prompt(vocab, prompt_tokens, seed), generation_tokens, prefill_step_size)
        for seed in range(trials)
    ]
    chosen = config.get("_ominix", {})
    return {
        "model": ref,
        "path": str(path),
        "model_type": config.get("model_type"),
        "prompt_tokens": prompt_tokens,
        "generation_tokens": generation_tokens,
        "trials": trials,
        "prefill_step_size": prefill_step_size,
        **{k: statistics.median(r[k] for r in runs) for k in METRICS},
        "load_s": load_s,
        "device": str(mx.default_device()),
        "compute_dtype": chosen.get("compute_dtype"),
        "checkpoint_dtype": chosen.get("checkpoint_dtype"),
        "quantization": chosen.get("quantization"),
        "blas": _blas.blas_status()["path"],
        "runs": runs,
    }


def format_result(r: dict) -> str:
    quant = r["quantization"]
    what = f"{quant['bits']}-bit (group {quant['group_size']})" if quant else r["checkpoint_dtype"]
    blas = r["blas"] or "bundled"
    return "\n".join(
        [
            f"{r['model']}  [{r['model_type']}, {what}, computing in {r['compute_dtype']} on "
            f"{r['device']}, BLAS: {blas}]",
            f"prompt {r['prompt_tokens']} tokens, generate {r['generation_tokens']}, "
            f"median of {r['trials']} trial(s) (load {r['load_s']:.2f}s)",
            f"  prompt      {r['prompt_tps']:10.1f} tok/s",
            f"  generation  {r['generation_tps']:10.1f} tok/s",
            f"  TTFT        {r['ttft_s'] * 1000:10.1f} ms",
            f"  peak memory {r['peak_memory_gb']:10.3f} GB",
        ]
    )


# ---- speech recognition -------------------------------------------------------------------------
#   RTF               wall seconds to transcribe / seconds of audio (lower is better; 0.1 = 10x
#                     faster than real time); decoding the file is included, as in a request
#   first segment     seconds from the start until the first recognised segment
#   peak memory       mx.get_peak_memory() during a trial, weights included (GB)

ASR_METRICS = ("rtf", "first_text_s", "first_segment_s", "wall_s", "peak_memory_gb")


def is_asr(ref: str, path: Path) -> bool:
    from ominix import kinds
    from ominix.hub.store import StoreError, locate
    from ominix.registry import RegistryError

    try:
        entry = locate(ref).entry
    except (RegistryError, StoreError):
        entry = None
    return kinds.detect(path, entry).name == "asr"


def time_transcription(recognizer, audio: Path, **options) -> dict:
    import mlx.core as mx

    from ominix.engine.audio.transcribe import SegmentEvent, TextEvent, TranscribeJob, run_job

    mx.reset_peak_memory()
    start = time.perf_counter()
    first = {}  # the first streamed text (what stream=true sends), the first finished window's segment

    def on_event(event):
        for kind, name in ((TextEvent, "text"), (SegmentEvent, "segment")):
            if isinstance(event, kind) and name not in first:
                first[name] = time.perf_counter() - start

    result = run_job(TranscribeJob(audio, early_text=True, **options), recognizer, on_event)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "rtf": wall / max(result.duration, 1e-9),
            "first_text_s": first.get("text", wall), "first_segment_s": first.get("segment", wall),
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
            "audio_seconds": result.duration, "text": result.text}


def run_asr_bench(ref: str, audio: str | None, trials: int = 3, *, warmup: bool = True, **options) -> dict:
    """Load a speech recognizer once, warm up on the first window, time `trials` transcriptions."""
    if not audio:
        raise BenchError("a speech recognition model needs --audio FILE (the speech to transcribe)")
    audio_path = Path(audio).expanduser()
    if not audio_path.is_file():
        raise BenchError(f"{audio}: no such file")
    if trials < 1:
        raise BenchError(f"trials must be >= 1, got {trials}")
    path = resolve_model(ref)

    import mlx.core as mx

    from ominix import _blas
    from ominix.engine.audio.asr import load
    from ominix.engine.audio.decode import AudioError, decode_audio
    from ominix.engine.load import LoadError

    start = time.perf_counter()
    try:
        recognizer = load(path)[0]
    except (LoadError, OSError, ValueError) as e:
        raise BenchError(f"cannot load {path}: {e}") from None
    load_s = time.perf_counter() - start
    try:
        if warmup:
            window = decode_audio(audio_path, max_seconds=24 * 3600)[: int(recognizer.window_seconds * 16000)]
            recognizer.transcribe_window(window, **options)
        runs = [time_transcription(recognizer, audio_path, **options) for _ in range(trials)]
    except AudioError as e:
        raise BenchError(f"{audio}: {e}") from None
    chosen = getattr(recognizer, "config", {}).get("_ominix", {})
    return {
        "model": ref, "path": str(path), "kind": "asr", "audio": str(audio_path),
        "audio_seconds": runs[0]["audio_seconds"], "trials": trials,
        **{k: statistics.median(r[k] for r in runs) for k in ASR_METRICS},
        "load_s": load_s, "device": str(mx.default_device()),
        "compute_dtype": chosen.get("compute_dtype"), "checkpoint_dtype": chosen.get("checkpoint_dtype"),
        "blas": _blas.blas_status()["path"], "text": runs[0]["text"],
        "runs": [{k: r[k] for k in ASR_METRICS} for r in runs],
    }


def format_asr_result(r: dict) -> str:
    return "\n".join([
        f"{r['model']}  [speech recognition, computing in {r['compute_dtype']} on {r['device']}, "
        f"BLAS: {r['blas'] or 'bundled'}]",
        f"{r['audio']} ({r['audio_seconds']:.1f} s of audio), median of {r['trials']} trial(s) "
        f"(load {r['load_s']:.2f}s)",
        f"  real-time factor {r['rtf']:8.3f}  ({1 / max(r['rtf'], 1e-9):.1f}x faster than real time)",
        f"  first text       {r['first_text_s']:8.2f} s  (streamed as each segment is decoded)",
        f"  first segment    {r['first_segment_s']:8.2f} s  (its window finished)",
        f"  wall             {r['wall_s']:8.2f} s",
        f"  peak memory      {r['peak_memory_gb']:8.3f} GB",
    ])
