"""OminiX vs mlx-audio 0.6.2 on Qwen3-TTS 12Hz, side by side, on the same checkpoint files.

    python benchmarks/bench_tts.py                 # talker 1.7B widths at 6 of 28 layers, 8-bit
    python benchmarks/bench_tts.py --layers 28     # the full depth (needs ~3 GB and patience)
    python benchmarks/bench_tts.py --quick         # smoke run: 2 layers, short text

The checkpoint has the real 1.7B widths (talker hidden 2048 / 16 heads / 8 KV heads / head_dim 128 /
intermediate 6144, codec vocabulary 3072, 16 codebooks; the code predictor's 5 layers at hidden 1024;
the real speech-tokenizer decoder: 8 transformer layers, 1536-channel vocoder, 1920 samples per
frame) with random weights, the talker at reduced depth (the only knob), a 4k-token text vocabulary
(it only sizes an embedding table) and, as mlx-community publishes it, 8-bit (group 64) talker and
code-predictor linears. EOS is made unreachable so both runtimes speak the same number of frames
per sentence, sampling with the checkpoint's defaults (top-k 50, temperature 0.9).

Each runtime runs in its own interpreter and streams: time to first audio = from the call to the
first decoded chunk; RTF = wall time / seconds of audio (lower is faster). mlx-audio streams every
0.48 s of audio (6 frames), the size of OminiX's chunks (each decoded as a stream, in 5 worker steps). `mlx-audio+blas` is mlx-audio with
the BLAS OminiX preloads on Linux, so the runtime difference is not just the BLAS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this checkout's ominix (and tests/ for the tokenizer fixture)
RUNNERS = ("ominix", "mlx-audio", "mlx-audio+blas")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "How are you doing today, my friend?",
    "The weather is sunny and the answer is forty two.",
]


def talker_config(layers: int) -> dict:
    return dict(
        vocab_size=3072, hidden_size=2048, intermediate_size=6144, num_hidden_layers=layers,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
        rope_scaling={"interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        num_code_groups=16, text_hidden_size=2048, text_vocab_size=4096, hidden_act="silu",
        codec_eos_token_id=2150, codec_think_id=2154, codec_nothink_id=2155, codec_think_bos_id=2156,
        codec_think_eos_id=2157, codec_pad_id=2148, codec_bos_id=2149, max_position_embeddings=32768,
        spk_id={"vivian": [3066], "ryan": [3061]}, spk_is_dialect={"vivian": False, "ryan": False},
        codec_language_id={"english": 2050, "chinese": 2055},
        code_predictor_config=dict(
            vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
            rope_theta=1000000.0, num_code_groups=16, max_position_embeddings=65536,
        ),
    )  # fmt: skip


DECODER = dict(
    codebook_size=2048, codebook_dim=512, hidden_size=512, latent_dim=1024, head_dim=64, num_attention_heads=16,
    num_key_value_heads=16, intermediate_size=1024, num_hidden_layers=8, rms_norm_eps=1e-5, rope_theta=10000.0,
    sliding_window=72, num_quantizers=16, upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
    decoder_dim=1536, max_position_embeddings=8000, layer_scale_initial_scale=0.01, attention_bias=False,
    hidden_act="silu", num_semantic_quantizers=1, semantic_codebook_size=4096,
    vector_quantization_hidden_dimension=512,
)  # fmt: skip


def _torch_conv_layout(name: str, w):
    """Our MLX [out, k, in] conv weights in the PyTorch order Qwen ships speech_tokenizer/ in."""
    transposed = (".upsample." in name and name.endswith(".0.conv.weight")) or ".block.1.conv.weight" in name
    return w.transpose(2, 0, 1) if transposed else w.transpose(0, 2, 1)


def build(dst: Path, layers: int) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ominix.models.qwen3_tts import Model, ModelArgs
    from ominix.models.qwen3_tts_codec import DecoderArgs, SpeechTokenizer
    from tests.qwen3_tts_fixture import qwen_tokenizer_files

    if (dst / "done").exists():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    qwen_tokenizer_files(dst)
    config = dict(model_type="qwen3_tts", talker_config=talker_config(layers), tokenizer_type="qwen3_tts_tokenizer_12hz",
                  tts_model_size="1b7", tts_model_type="custom_voice", tts_pad_token_id=640, tts_bos_token_id=641,
                  tts_eos_token_id=642, im_start_token_id=615, im_end_token_id=616,
                  quantization={"group_size": 64, "bits": 8})  # fmt: skip
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    (dst / "generation_config.json").write_text(json.dumps({
        "do_sample": True, "repetition_penalty": 1.05, "temperature": 0.9, "top_p": 1.0, "top_k": 50,
        "subtalker_dosample": True, "subtalker_temperature": 0.9, "subtalker_top_k": 50, "subtalker_top_p": 1.0,
        "max_new_tokens": 8192}))  # fmt: skip
    mx.random.seed(0)
    model = Model(ModelArgs.from_dict(config))
    out = {}
    for name, p in tree_flatten(model.parameters()):
        if name.endswith("norm.weight"):
            w = mx.ones(p.shape)
        elif name.endswith("bias"):
            w = mx.zeros(p.shape)
        else:
            w = mx.random.normal(p.shape) * (0.5 if "embedding" in name else p.shape[-1] ** -0.5)
        if name == "talker.codec_head.weight":  # EOS never wins: equal frame counts for both runtimes
            w[config["talker_config"]["codec_eos_token_id"]] = -0.0
        if w.ndim == 2 and "embedding" not in name:
            q, s, b = mx.quantize(w, group_size=64, bits=8)
            base = name[: -len(".weight")]
            out[name], out[base + ".scales"], out[base + ".biases"] = q, s, b
        else:
            out[name] = w
        mx.eval(list(out.values())[-3:])
    mx.save_safetensors(str(dst / "model.safetensors"), out)
    codec_dir = dst / "speech_tokenizer"
    codec_dir.mkdir(exist_ok=True)
    tok = {"model_type": "qwen3_tts_tokenizer_12hz", "decoder_config": DECODER, "encoder_valid_num_quantizers": 16,
           "input_sample_rate": 24000, "output_sample_rate": 24000, "decode_upsample_rate": 1920,
           "encode_downsample_rate": 1920}  # fmt: skip
    (codec_dir / "config.json").write_text(json.dumps(tok, indent=2))
    codec = SpeechTokenizer(DecoderArgs.from_dict(tok))
    weights = {}
    for name, p in tree_flatten(codec.parameters()):
        if "cluster_usage" in name or name.endswith(("norm.weight", "layernorm.weight")):
            w = mx.ones(p.shape)
        elif name.endswith(("alpha", "beta", "bias")):
            w = mx.zeros(p.shape)
        elif "scale" in name or name.endswith("gamma"):
            w = mx.full(p.shape, 0.01)
        else:
            fan_in = 1
            for d in p.shape[1:]:
                fan_in *= d
            w = mx.random.normal(p.shape) * (0.3 if "embedding_sum" in name else fan_in**-0.5)
        if w.ndim == 3:
            w = _torch_conv_layout(name, w)
        weights[name.replace(".codebook.", "._codebook.")] = w
    mx.save_safetensors(str(codec_dir / "model.safetensors"), weights)
    (dst / "done").write_text("ok")
    return dst


# ---- runners (each in its own interpreter) -----------------------------------------------------


def run_ominix(ckpt: Path, text: list[str], frames: int) -> dict:
    import mlx.core as mx

    from ominix.engine.audio.qwen3_tts import load_qwen3_tts
    from ominix.engine.audio.speak import SpeakJob
    from ominix.engine.audio.synth import SynthesisOptions

    t0 = time.perf_counter()
    tts = load_qwen3_tts(ckpt)
    load_s = time.perf_counter() - t0

    class Resident:
        model = tts

    def once(lines, seed):
        events = []

        class Ticket:
            @staticmethod
            def emit(e):
                events.append((time.perf_counter(), len(e.samples)))

        job = SpeakJob("\n".join(lines), SynthesisOptions(voice="vivian", seed=seed, max_frames=frames + 1))
        start = time.perf_counter()
        job.begin(Resident, Ticket)
        while not job.step():
            pass
        mx.synchronize()
        end = time.perf_counter()
        return start, end, events

    once(text[:1], 0)  # warm-up (compiles kernels, allocates)
    start, end, events = once(text, 1)
    audio = sum(n for _, n in events) / tts.sample_rate
    return {"load_s": load_s, "first_audio_s": events[0][0] - start, "wall_s": end - start, "audio_s": audio,
            "chunks": len(events), "peak_gb": mx.get_peak_memory() / 1e9}  # fmt: skip


def run_mlx_audio(ckpt: Path, text: list[str], frames: int) -> dict:
    import mlx.core as mx
    from mlx_audio.tts.utils import load_model

    t0 = time.perf_counter()
    model = load_model(str(ckpt))
    load_s = time.perf_counter() - t0

    def once(lines):
        start = time.perf_counter()
        stamps = []
        for result in model.generate(text="\n".join(lines), voice="vivian", split_pattern="\n", max_tokens=frames,
                                     stream=True, streaming_interval=0.48, verbose=False):  # fmt: skip
            mx.eval(result.audio)
            stamps.append((time.perf_counter(), int(result.audio.shape[-1])))
        return start, time.perf_counter(), stamps

    once(text[:1])
    start, end, stamps = once(text)
    audio = sum(n for _, n in stamps) / model.sample_rate
    return {"load_s": load_s, "first_audio_s": stamps[0][0] - start, "wall_s": end - start, "audio_s": audio,
            "chunks": len(stamps), "peak_gb": mx.get_peak_memory() / 1e9}  # fmt: skip


def _child(runner: str, ckpt: str, sentences: int, frames: int) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n" % (str(ROOT), str(HERE))
        + ("import ominix\n" if runner != "mlx-audio" else "")  # ominix preloads its BLAS on import
        + "import bench_tts as b\n"
        + f"fn = b.run_ominix if {runner!r} == 'ominix' else b.run_mlx_audio\n"
        + f"print('RESULT ' + json.dumps(fn(b.Path({ckpt!r}), b.SENTENCES[:{sentences}], {frames})))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # mlx-audio asks the hub for the tokenizer otherwise
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{runner} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=6, help="talker layers (the real model has 28)")
    ap.add_argument("--frames", type=int, default=40, help="audio frames per sentence (80 ms each)")
    ap.add_argument("--sentences", type=int, default=len(SENTENCES), help="sentences spoken (at most 3)")
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=None, help="where to keep the checkpoint (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.frames = 2, 12
    sentences = 1 if args.quick else max(1, min(args.sentences, len(SENTENCES)))
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-tts-"))
    ckpt = build(root / f"qwen3-tts-1.7b-L{args.layers}-8bit", args.layers)
    results = {}
    for runner in args.runners.split(","):
        trials = [_child(runner, str(ckpt), sentences, args.frames) for _ in range(args.trials)]
        results[runner] = {k: statistics.median(t[k] for t in trials) for k in trials[0]}
    print(f"Qwen3-TTS 12Hz 1.7B widths, talker {args.layers}/28 layers, 8-bit; {sentences} sentence(s) x "
          f"{args.frames} frames; {os.cpu_count()} CPU threads")
    print(f"{'runtime':<16}{'first audio s':>14}{'wall s':>9}{'audio s':>9}{'RTF':>7}{'chunks':>8}{'peak GB':>9}")
    for runner, r in results.items():
        rtf = r["wall_s"] / r["audio_s"]
        print(f"{runner:<16}{r['first_audio_s']:>14.2f}{r['wall_s']:>9.2f}{r['audio_s']:>9.2f}{rtf:>7.2f}"
              f"{r['chunks']:>8.0f}{r['peak_gb']:>9.2f}")
    if "ominix" in results:
        o = results["ominix"]
        for peer in (p for p in results if p != "ominix"):
            r = results[peer]
            speed = (r["wall_s"] / r["audio_s"]) / (o["wall_s"] / o["audio_s"])
            print(f"ominix vs {peer}: {speed:.2f}x real-time speed, first audio "
                  f"{r['first_audio_s'] / o['first_audio_s']:.2f}x sooner")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
