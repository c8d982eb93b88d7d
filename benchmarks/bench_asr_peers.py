"""OminiX vs mlx-audio 0.6.2 and funasr-mlx 0.2.3 on Qwen3-ASR, Fun-ASR-Nano and SenseVoice-Small,
side by side in one run, on the same files.

    python benchmarks/bench_asr_peers.py                         # all three, 60 s clip, 3 trials
    python benchmarks/bench_asr_peers.py --model qwen3-asr --seconds 20 -n 1 --keep /tmp/asr-peers

Checkpoints are random at the published widths, in the layouts the peers read (see
benchmarks/asr_peer_checkpoints.py): Qwen3-ASR-0.6B in Qwen's original layout (encoder 18 x 896 in
full, decoder 1024 wide with `--text-layers` of its 28 layers, the real 151936-token vocabulary),
Fun-ASR-Nano-2512 (SenseVoice encoder 50 + 20 blocks x 512, adaptor, Qwen3-0.6B widths with
`--text-layers` of 28) and SenseVoice-Small (50 + 20 blocks, 25055 tokens), float32 everywhere.
Every runner loads those files through its own loader or converter (funasr-mlx's
`convert_checkpoint`; mlx-audio's Fun-ASR-Nano `convert`, whose output OminiX loads too).

Each runner runs in its own interpreter (peak RSS is per process, load included); a trial is the
whole clip in one call: front end, encoder, prompt, greedy decoding of `--tokens` new tokens at
most (random weights never say end-of-turn early; the token counts are printed). RTF is compute
seconds per second of audio (lower is faster); median of the trials after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNERS = {
    "qwen3-asr": ("ominix", "mlx_audio", "funasr_mlx"),
    "fun-asr-nano": ("ominix", "mlx_audio", "funasr_mlx"),
    "sensevoice": ("ominix", "mlx_audio", "funasr_mlx"),
}
NAMES = {"ominix": "OminiX", "mlx_audio": "mlx-audio 0.6.2", "funasr_mlx": "funasr-mlx 0.2.3"}


def audio(seconds: float):
    sys.path.insert(0, str(ROOT))
    from tests.funasr_checkpoints import speechlike

    return speechlike(seconds, seed=0)


def _peak_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB


def _timed(fn, samples, trials: int, warmup: bool) -> tuple[list[float], int]:
    times, count = [], 0
    for _ in range(trials + warmup):  # the first run warms up
        t = time.perf_counter()
        count = fn(samples)
        times.append(time.perf_counter() - t)
    return times[int(warmup):], count


# ---- Qwen3-ASR ----

def qwen3_asr_ominix(path: Path, samples, tokens: int, trials: int):
    import ominix  # noqa: F401  (BLAS preload first)
    from ominix.engine.audio.qwen3_asr import load_qwen3_asr

    recognizer = load_qwen3_asr(path)
    recognizer.max_new_tokens = tokens
    return lambda s: len(recognizer.generate(s)["tokens"])


def qwen3_asr_mlx_audio(path: Path, samples, tokens: int, trials: int):
    from mlx_audio.stt.utils import load

    model = load(str(path))

    def run(s):
        out = model.generate(s, max_tokens=tokens)
        return int(getattr(out, "generation_tokens", 0) or len(model._tokenizer.encode(out.text)))
    return run


def qwen3_asr_funasr_mlx(path: Path, samples, tokens: int, trials: int):
    from funasr_mlx.llm_asr import LlmAsrTranscriber

    converted = _funasr_mlx_convert(path, "qwen3-asr", source_rule="qwen3-asr")
    transcriber = LlmAsrTranscriber(converted, family="qwen3-asr", max_tokens=tokens)
    return lambda s: len(transcriber._decode(*transcriber._audio_embeds(s))[1])


# ---- Fun-ASR-Nano ----

def fun_asr_nano_ominix(path: Path, samples, tokens: int, trials: int):
    import ominix  # noqa: F401  (BLAS preload first)
    from ominix.engine.audio.fun_asr_nano import load_fun_asr_nano

    recognizer = load_fun_asr_nano(_checkpoints().nano_mlx_community(path))
    recognizer.max_new_tokens = tokens
    return lambda s: len(recognizer.generate(s)["tokens"])


def fun_asr_nano_mlx_audio(path: Path, samples, tokens: int, trials: int):
    from mlx_audio.stt.utils import load

    model = load(str(_checkpoints().nano_mlx_community(path)))
    return lambda s: int(model.generate(s, max_tokens=tokens).generation_tokens)


def fun_asr_nano_funasr_mlx(path: Path, samples, tokens: int, trials: int):
    import yaml
    from funasr_mlx.llm_asr import LlmAsrTranscriber

    text = json.loads((path / "Qwen3-0.6B" / "config.json").read_text())
    raw = yaml.safe_load((path / "config.yaml").read_text())
    config = {"audio_encoder_conf": raw["audio_encoder_conf"], "audio_adaptor_conf": raw["audio_adaptor_conf"],
              "input_size": 560, "llm_conf": {"args": text}}
    converted = _funasr_mlx_convert(path, "fun-asr-nano", source=path / "model.pt", config=config,
                                    support=path / "Qwen3-0.6B", stream_large_tensors=True,
                                    source_rule="fun-asr-nano")
    transcriber = LlmAsrTranscriber(converted, family="fun-asr-nano", max_tokens=tokens)
    transcriber._caches = transcriber._caches[:text["num_hidden_layers"]]
    return lambda s: len(transcriber._decode(*transcriber._audio_embeds(s))[1])


# ---- SenseVoice-Small (CTC: no token budget) ----

def sensevoice_ominix(path: Path, samples, tokens: int, trials: int):
    import ominix  # noqa: F401  (BLAS preload first)
    from ominix.engine.audio.funasr import load_sensevoice

    recognizer = load_sensevoice(path)
    return lambda s: len(recognizer.recognize(s)["ids"])


def sensevoice_mlx_audio(path: Path, samples, tokens: int, trials: int):
    from mlx_audio.stt.utils import load

    model = load(str(_checkpoints().sensevoice_mlx_community(path)))
    # the benchmark's SentencePiece model is small: random CTC ids past it would fail to decode, so
    # count the ids and skip only the final id -> text lookup (OminiX's decoder maps them all)
    counted = []
    model._decode_tokens = lambda ids: counted.append(len(ids)) or ""

    def run(s):
        model.generate(s)
        return counted[-1]
    return run


def sensevoice_funasr_mlx(path: Path, samples, tokens: int, trials: int):
    import mlx.core as mx
    from funasr_mlx.frontend import FbankConfig, WavFrontend
    from funasr_mlx.pipeline import load_model

    converted = path.parent / f"{path.name}-funasr-mlx"
    if not converted.exists():
        subprocess.run([sys.executable, "-m", "funasr_mlx.cli", "convert", str(path / "model.pt"), str(converted),
                        "--model", "sensevoice", "--config", str(path / "config.yaml"), "--dtype", "float32"],
                       check=True, capture_output=True)
    net, config = load_model(converted, family="sensevoice", config=path / "config.yaml")
    options = dict(config.get("frontend_conf") or {})
    options.pop("cmvn_file", None)
    options["max_seconds"] = 60.0  # funasr-mlx bounds its input (30 s default, 60 s max)
    frontend = WavFrontend(FbankConfig.from_dict(options), cmvn=path / "am.mvn")

    def run(s):
        feats = frontend(s)
        ids = net.greedy_decode(feats[None], mx.array([feats.shape[0]], dtype=mx.int32))
        return len(ids[0] if ids and isinstance(ids[0], list) else ids)
    return run


def _checkpoints():
    sys.path.insert(0, str(HERE))
    import asr_peer_checkpoints

    return asr_peer_checkpoints


def _funasr_mlx_convert(path: Path, family: str, source: Path | None = None, config: dict | None = None,
                        support: Path | None = None, **options) -> Path:
    import shutil

    from funasr_mlx.checkpoints import convert_checkpoint

    out = path.parent / f"{path.name}-funasr-mlx"
    if not out.exists():
        config = config or json.loads((path / "config.json").read_text())
        tmp = path.parent / f".{out.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        convert_checkpoint(source or path, tmp, model=family, dtype="float32", config=config, **options)
        for f in (support or path).iterdir():  # tokenizer and feature-extractor files
            if f.is_file() and not f.name.endswith(".safetensors") and not (tmp / f.name).exists():
                shutil.copy(f, tmp / f.name)
        tmp.rename(out)
    return out


def worker(model: str, runner: str, path: str, seconds: float, tokens: int, trials: int, warmup: bool = True) -> dict:
    started = time.perf_counter()
    samples = audio(seconds)
    run = globals()[f"{model.replace('-', '_')}_{runner}"](Path(path), samples, tokens, trials)
    load = time.perf_counter() - started
    times, count = _timed(run, samples, trials, warmup)
    return {"load_s": load, "times": times, "tokens": count, "peak_gb": _peak_gb()}


def run(model: str, runner: str, path: Path, seconds: float, tokens: int, trials: int, warmup: bool) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_asr_peers as b; "
            f"print('RESULT ' + json.dumps(b.worker({model!r}, {runner!r}, {str(path)!r}, {seconds}, {tokens}, "
            f"{trials}, {warmup})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{runner} on {model} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def build(model: str, path: Path, text_layers: int) -> None:
    sys.path.insert(0, str(HERE))
    import asr_peer_checkpoints as checkpoints

    if model == "qwen3-asr":
        checkpoints.build_qwen3_asr(path, text_layers)
    elif model == "fun-asr-nano":
        checkpoints.build_fun_asr_nano(path, text_layers)
    else:
        checkpoints.build_sensevoice(path)


def main() -> None:
    from bench_asr_funasr import print_row  # the same README row as the FunASR benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*RUNNERS, "all"], default="all")
    parser.add_argument("--runners", default="ominix,mlx_audio,funasr_mlx")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per clip (LLM decoders)")
    parser.add_argument("--text-layers", type=int, default=4, help="decoder layers of the 28 (LLM decoders)")
    parser.add_argument("-n", "--trials", type=int, default=3)
    parser.add_argument("--peer-trials", type=int, default=None,
                        help="timed runs of the peers, without a warm-up run (they are 5-15x slower on a CPU)")
    parser.add_argument("--keep", type=Path, help="build the checkpoints here and keep them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-asr-peers-"))
    models = list(RUNNERS) if args.model == "all" else [args.model]
    wanted = args.runners.split(",")
    print(f"| model | runner | RTF ({args.seconds:.0f} s audio) | peak RSS GB | load s | tokens | "
          "OminiX vs runner: speed / memory |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        path = root / model
        if not (path / "config.json").exists() and not (path / "config.yaml").exists():
            build(model, path, args.text_layers)
        ours = None
        for runner in RUNNERS[model]:
            if runner not in wanted:
                continue
            try:
                peer = runner != "ominix" and args.peer_trials is not None
                trials = args.peer_trials if peer else args.trials
                result = run(model, runner, path, args.seconds, args.tokens, trials, not peer)
            except RuntimeError as e:
                print(f"| {model} | {NAMES[runner]} | failed: {str(e).splitlines()[-1][:120]} | | | | |", flush=True)
                continue
            print_row(model, NAMES[runner], result, ours, args.seconds)
            ours = result if runner == "ominix" else ours


if __name__ == "__main__":
    main()
