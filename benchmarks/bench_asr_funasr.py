"""OminiX vs funasr-mlx 0.2.3 on FunASR models at their published size, side by side, same files.

    python benchmarks/bench_asr_funasr.py                      # Paraformer-large and SenseVoice-Small, 60 s
    python benchmarks/bench_asr_funasr.py --model paraformer --seconds 30 -n 3

The checkpoints are built with funasr from the published configs (Paraformer-large: SAN-M 512 x 50
encoder, 16-block decoder, 8404 tokens; SenseVoice-Small: 50 + 20 blocks, 25055 tokens) with random
weights, saved as model.pt like the ModelScope / Hugging Face repos; OminiX loads them through its
own converter, funasr-mlx through `funasr-mlx convert --dtype float32`. The audio is a deterministic
speech-like signal. Each runtime runs in its own interpreter (peak RSS is per process); the time is
the whole window: front end, encoder, predictor/decoder (or CTC), greedy tokens. The real-time
factor is seconds of compute per second of audio (lower is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def build(model: str, out: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import torch
    import yaml

    from tests.funasr_checkpoints import (FRONTEND_CONF, paraformer_config, sensevoice_config,
                                          train_sentencepiece, write_am_mvn)

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if model == "paraformer":
        from funasr.models.paraformer.model import Paraformer

        config = paraformer_config(dims=512, enc_blocks=50, dec_blocks=16, att_layers=16)
        config["encoder_conf"]["linear_units"] = config["decoder_conf"]["linear_units"] = 2048
        tokens = ["<blank>", "<s>", "</s>"] + [chr(0x4E00 + i) for i in range(8400)] + ["<unk>"]
        net = Paraformer(encoder="SANMEncoder", encoder_conf=config["encoder_conf"], decoder="ParaformerSANMDecoder",
                         decoder_conf=config["decoder_conf"], predictor="CifPredictorV2",
                         predictor_conf=config["predictor_conf"], input_size=560, vocab_size=len(tokens),
                         **config["model_conf"])
        (out / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
        config["vocab_size"] = config["model_conf"]["vocab_size"] = len(tokens)  # funasr-mlx reads model_conf
    else:
        from funasr.models.sense_voice.model import SenseVoiceSmall

        config = sensevoice_config(dims=512, blocks=50, tp_blocks=20)
        config["encoder_conf"]["linear_units"] = 2048
        config["vocab_size"] = config["model_conf"]["vocab_size"] = 25055  # funasr-mlx reads model_conf
        net = SenseVoiceSmall(encoder="SenseVoiceEncoderSmall", encoder_conf=config["encoder_conf"], input_size=560,
                              **config["model_conf"])
        train_sentencepiece(out / "chn_jpn_yue_eng_ko_spectok.bpe.model")
    config["frontend_conf"] = {**FRONTEND_CONF, "cmvn_file": "am.mvn"}
    with torch.no_grad():  # small weights keep activations in range through 50+ layers
        for p in net.parameters():
            p.mul_(0.5)
    torch.save(net.state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    write_am_mvn(out / "am.mvn", 560)
    return out


def audio(seconds: float):
    sys.path.insert(0, str(ROOT))
    from tests.funasr_checkpoints import speechlike

    return speechlike(seconds, seed=0)


def _peak_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB


def worker_ominix(model: str, path: Path, seconds: float, trials: int, warmup: bool = True) -> dict:
    import time

    import ominix  # noqa: F401  (BLAS preload first)
    from ominix.engine.audio.funasr import load_paraformer, load_sensevoice

    started = time.perf_counter()
    recognizer = (load_paraformer if model == "paraformer" else load_sensevoice)(path)
    load = time.perf_counter() - started
    samples = audio(seconds)
    times, ids = [], None
    for _ in range(trials + warmup):  # the first run warms up
        t = time.perf_counter()
        ids = recognizer.recognize(samples)["ids"]
        times.append(time.perf_counter() - t)
    return {"load_s": load, "times": times[int(warmup):], "tokens": len(ids), "peak_gb": _peak_gb()}


def worker_funasr_mlx(model: str, path: Path, seconds: float, trials: int, warmup: bool = True) -> dict:
    import time

    import mlx.core as mx
    from funasr_mlx.frontend import FbankConfig, WavFrontend
    from funasr_mlx.pipeline import load_model

    converted = path / "funasr-mlx"
    if not converted.exists():
        subprocess.run([sys.executable, "-m", "funasr_mlx.cli", "convert", str(path / "model.pt"), str(converted),
                        "--model", model, "--config", str(path / "config.yaml"), "--dtype", "float32"],
                       check=True, capture_output=True)
    started = time.perf_counter()
    net, config = load_model(converted, family=model, config=path / "config.yaml")
    load = time.perf_counter() - started
    options = dict(config.get("frontend_conf") or {})
    options.pop("cmvn_file", None)
    options["max_seconds"] = min(60.0, seconds + 1)  # funasr-mlx bounds its input (30 s default, 60 s max)
    frontend = WavFrontend(FbankConfig.from_dict(options), cmvn=path / "am.mvn")
    samples = audio(seconds)
    times, ids = [], None
    for _ in range(trials + warmup):
        t = time.perf_counter()
        feats = frontend(samples)
        ids = net.greedy_decode(feats[None], mx.array([feats.shape[0]], dtype=mx.int32))
        times.append(time.perf_counter() - t)
    first = ids[0] if ids and isinstance(ids[0], list) else ids
    return {"load_s": load, "times": times[int(warmup):], "tokens": len(first), "peak_gb": _peak_gb()}


def run(runner: str, model: str, path: Path, seconds: float, trials: int, warmup: bool) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_asr_funasr as b; "
            f"print(json.dumps(b.worker_{runner}({model!r}, __import__('pathlib').Path({str(path)!r}), "
            f"{seconds}, {trials}, {warmup})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"{runner} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["paraformer", "sensevoice", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("-n", "--trials", type=int, default=3)
    parser.add_argument("--peer-trials", type=int, default=None,
                        help="timed runs of funasr-mlx, without a warm-up run (it is ~20x slower on a CPU)")
    parser.add_argument("--keep", type=Path, help="build the checkpoints here and keep them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-funasr-"))
    models = ["paraformer", "sensevoice"] if args.model == "both" else [args.model]
    print(f"| model | runner | RTF ({args.seconds:.0f} s audio) | peak RSS GB | load s | tokens | ours vs runner: speed / memory |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        path = root / model
        if not (path / "model.pt").exists():
            build(model, path)
        peer = args.peer_trials
        ours = run("ominix", model, path, args.seconds, args.trials, True)
        print_row(model, "OminiX", ours, None, args.seconds)
        theirs = run("funasr_mlx", model, path, args.seconds, peer or args.trials, peer is None)
        print_row(model, "funasr-mlx 0.2.3", theirs, ours, args.seconds)


def print_row(model: str, name: str, r: dict, ours: dict | None, seconds: float) -> None:
    """One README table row: median RTF, peak memory, load time, tokens; ratios to `ours`."""
    r["rtf"] = sorted(r["times"])[len(r["times"]) // 2] / seconds
    ratio = "" if ours is None else f"{r['rtf'] / ours['rtf']:.2f}x / {ours['peak_gb'] / r['peak_gb']:.2f}x"
    print(f"| {model} | {name} | {r['rtf']:.4f} | {r['peak_gb']:.2f} | {r['load_s']:.1f} | {r['tokens']} | {ratio} |",
          flush=True)

if __name__ == "__main__":
    main()
