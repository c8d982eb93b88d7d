"""OminiX vs the GPT-SoVITS reference (gpt-sovits-cpufast 0.1.0, PyTorch CPU) on GPT-SoVITS v2,
side by side, on the same checkpoint files.

    python benchmarks/bench_gpt_sovits.py                # GPT at 12 of 24 layers, 3 sentences x 120 tokens
    python benchmarks/bench_gpt_sovits.py --layers 24    # the full GPT depth
    python benchmarks/bench_gpt_sovits.py --quick        # smoke run: 2 layers, 1 sentence x 30 tokens

The checkpoints have the published widths with random weights, saved by the reference's own classes
as GPT-SoVITS saves them: the GPT `s1bert25hz` (hidden 512, 16 heads, FFN 2048, 1025 semantic ids,
732 phonemes; depth is the only knob) and the SoVITS `s2G` of configs/s2.json (192-wide encoders,
the 512-channel HiFi-GAN upsampling x640 to 32 kHz). EOS is made unreachable so both runtimes
generate the same number of semantic tokens per sentence (top-k 15 sampling, repetition penalty
1.35, as the reference's defaults). Both get the same inputs per sentence: phoneme ids and BERT
features (the text front end and the BERT run outside the timed loop on both sides), the reference
clip's semantic codes and its spectrogram (the voice, made once).

Per sentence each runtime generates the semantic tokens, then decodes them with SoVITS; the
reference as TTS.run does with `return_fragment` (infer_panel, then vits_model.decode, sentence by
sentence), OminiX as its SpeakJob on the stepped worker (one token per step). Time to first audio =
from the start to the first sentence's audio; RTF = wall time / seconds of audio (lower is faster).
Each runtime runs in its own interpreter.
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
sys.path.insert(0, str(ROOT))
GPT = {"model": {"hidden_dim": 512, "embedding_dim": 512, "head": 16, "n_layer": 24, "vocab_size": 1025,
                 "phoneme_vocab_size": 732, "EOS": 1024, "dropout": 0.0, "linear_units": 2048},
       "data": {"max_sec": 54}}  # fmt: skip
S2 = {"train": {"segment_size": 20480},
      "data": {"sampling_rate": 32000, "filter_length": 2048, "hop_length": 640, "win_length": 2048, "n_speakers": 300},
      "model": {"inter_channels": 192, "hidden_channels": 192, "filter_channels": 768, "n_heads": 2, "n_layers": 6,
                "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
                "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "upsample_rates": [10, 8, 2, 2, 2],
                "upsample_initial_channel": 512, "upsample_kernel_sizes": [16, 16, 8, 2, 2], "n_layers_q": 3,
                "use_spectral_norm": False, "gin_channels": 512, "semantic_frame_rate": "25hz",
                "freeze_quantizer": True, "version": "v2"}}  # fmt: skip


def inputs(sentences: int, seed: int = 0) -> dict:
    """Phonemes + BERT features per sentence, the voice's transcript features, codes and clip."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def text(n):
        return rng.integers(1, 732, n).tolist(), (0.5 * rng.standard_normal((n, 1024))).astype(np.float32)

    t = np.arange(4 * 32000) / 32000
    clip = (0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)).astype(np.float32)
    return {"sentences": [text(32) for _ in range(sentences)], "prompt_text": text(20),
            "prompt_codes": rng.integers(0, 1024, 100).tolist(), "clip": clip}


# ---- the checkpoints (built in the reference venv by the reference's classes) -------------------


def build_reference(dst: str, layers: int) -> None:
    """Runs in the reference venv."""
    sys.path.insert(0, str(ROOT / "tests"))
    import gpt_sovits_reference  # noqa: F401  (the package's import paths and training-only stubs)
    import sovits_reference as sr
    import torch
    from AR.models.t2s_model import Text2SemanticDecoder
    from module.models import SynthesizerTrn

    dst = Path(dst)
    (dst / "gpt").mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(GPT))
    config["model"]["n_layer"] = layers
    torch.manual_seed(0)
    gpt = Text2SemanticDecoder(config, top_k=15)
    sr.randomize(gpt, 0)
    with torch.no_grad():  # EOS unreachable: the last post-norm output is ~3 + small; EOS's row sums to -D/√D
        last = gpt.h.layers[-1].norm2
        last.weight.fill_(0.1)
        last.bias.fill_(3.0)
        gpt.ar_predict_layer.weight[config["model"]["EOS"]] = -1.0 / config["model"]["hidden_dim"] ** 0.5
    state = {"model." + k: v for k, v in gpt.state_dict().items()}
    torch.save({"weight": state, "config": config}, dst / "gpt" / "s1bert25hz-bench.ckpt")
    sovits = SynthesizerTrn(1025, S2["train"]["segment_size"] // 640, n_speakers=300, **S2["model"])
    sr.randomize(sovits, 1)
    torch.save({"weight": sovits.state_dict(), "config": S2, "info": "bench"}, dst / "s2G-bench.pth")


def run_reference(dst: str, sentences: int, tokens: int) -> dict:
    """Runs in the reference venv: TTS.run's loading and per-sentence (return_fragment) flow."""
    sys.path.insert(0, str(ROOT / "tests"))
    import gpt_sovits_reference  # noqa: F401
    import sovits_reference as sr
    import torch
    from AR.models.t2s_lightning_module import Text2SemanticLightningModule
    from module.mel_processing import spectrogram_torch
    from module.models import SynthesizerTrn

    dst = Path(dst)
    t0 = time.perf_counter()
    dict_s1 = torch.load(dst / "gpt" / "s1bert25hz-bench.ckpt", map_location="cpu", weights_only=False)
    t2s = Text2SemanticLightningModule(dict_s1["config"], "****", is_train=False, build_t2s_transformer=False,
                                       build_h_module=False)  # fmt: skip
    t2s.load_inference_only_state_dict(dict_s1["weight"])
    t2s.model.release_inference_only_unused_modules()
    t2s = t2s.eval()
    dict_s2 = sr.load_sovits(str(dst / "s2G-bench.pth"))
    vits = SynthesizerTrn(1025, S2["train"]["segment_size"] // 640, n_speakers=300, **dict_s2["config"]["model"])
    vits.load_state_dict(dict_s2["weight"], strict=False)
    vits.dec.remove_weight_norm()
    vits = vits.eval()
    load_s = time.perf_counter() - t0
    data = inputs(sentences)
    with torch.no_grad():
        refer = spectrogram_torch(torch.from_numpy(data["clip"])[None], 2048, 32000, 640, 2048, center=False)
        ge, ge_text = vits.build_decode_condition(refer)
    prompt = torch.tensor([data["prompt_codes"]])
    p_phones, p_bert = data["prompt_text"]

    def once(items):
        start, stamps = time.perf_counter(), []
        for phones, bert in items:
            all_phones = torch.tensor([p_phones + phones])
            all_bert = torch.from_numpy(__import__("numpy").concatenate([p_bert, bert]).T.copy())[None]
            with torch.no_grad():
                pred, idx = t2s.model.infer_panel(all_phones, torch.tensor([all_phones.shape[1]]), prompt, all_bert,
                                                  top_k=15, top_p=1, temperature=1, early_stop_num=tokens)  # fmt: skip
                semantic = pred[0][-idx[0]:] if isinstance(pred, list) else pred[0, -idx:]
                wav = vits.decode(semantic[None, None], torch.tensor([phones]), refer, ge=ge, ge_text=ge_text)
            stamps.append((time.perf_counter(), int(wav.shape[-1]), int(semantic.shape[-1])))
        return start, time.perf_counter(), stamps

    once(data["sentences"][:1])  # warm-up
    start, end, stamps = once(data["sentences"])
    return {"load_s": load_s, "first_audio_s": stamps[0][0] - start, "wall_s": end - start,
            "audio_s": sum(s[1] for s in stamps) / 32000, "tokens": sum(s[2] for s in stamps)}  # fmt: skip


def run_ominix(dst: str, sentences: int, tokens: int) -> dict:
    import ominix  # noqa: F401  (first: it preloads the BLAS MLX binds to on import)
    import mlx.core as mx
    import numpy as np

    from ominix.engine.audio import gpt_sovits as gs
    from ominix.engine.audio.gpt_sovits_tts import GPTSoVITS, Voice
    from ominix.engine.audio.speak import SpeakJob
    from ominix.engine.audio.synth import SynthesisOptions

    dst = Path(dst)
    data = inputs(sentences)
    by_text = {f"Sentence {i}.": s for i, s in enumerate(data["sentences"])}

    class Front:  # the same phonemes + BERT features the reference gets
        def phones(self, text, language=None):
            return by_text[text][0]

        def __call__(self, text, language=None, first=None):
            return by_text[text]

    t0 = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="gsv-bench-"))
    gpt = gs.load_gpt(gs.convert_gpt(dst / "gpt" / "s1bert25hz-bench.ckpt", out / "gpt"))
    sovits = gs.load_sovits(gs.convert_sovits(dst / "s2G-bench.pth", out / "sovits"))
    load_s = time.perf_counter() - t0
    tts = GPTSoVITS(gpt, sovits, None, Front())
    p_phones, p_bert = data["prompt_text"]
    voice = Voice(data["prompt_codes"], tts.style(data["clip"]), p_phones, p_bert).pack()

    class Resident:
        model = tts

    def once(n, seed):
        events = []

        class Ticket:
            @staticmethod
            def emit(e):
                events.append((time.perf_counter(), len(e.samples)))

        text = " ".join(f"Sentence {i}." for i in range(n))
        job = SpeakJob(text, SynthesisOptions(voice_embedding=voice, seed=seed, max_frames=tokens))
        start = time.perf_counter()
        job.begin(Resident, Ticket)
        while not job.step():
            pass
        mx.synchronize()
        return start, time.perf_counter(), events, job.result()

    once(1, 0)
    start, end, events, usage = once(sentences, 1)
    pause = int(0.3 * 32000)  # our chunks carry the reference's 0.3 s fragment interval: not counted
    return {"load_s": load_s, "first_audio_s": events[0][0] - start, "wall_s": end - start,
            "audio_s": sum(n - pause for _, n in events) / 32000, "tokens": usage.output_tokens,
            "peak_gb": mx.get_peak_memory() / 1e9}  # fmt: skip


def _child(python: str, call: str) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n" % (str(ROOT), str(HERE))
            + "import bench_gpt_sovits as b\n" + f"print('RESULT ' + json.dumps(b.{call}))\n")  # fmt: skip
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{call} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12, help="GPT layers (the real model has 24)")
    ap.add_argument("--tokens", type=int, default=120, help="semantic tokens per sentence (25 a second)")
    ap.add_argument("--sentences", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=None, help="where to keep the checkpoints (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.tokens, args.sentences = 2, 30, 1
    from tests import gpt_sovits_venv

    ref_python = str(gpt_sovits_venv.python())
    dst = Path(args.dir or tempfile.mkdtemp(prefix="bench-gsv-")) / f"gsv-L{args.layers}"
    if not (dst / "s2G-bench.pth").exists():
        _child(ref_python, f"build_reference({str(dst)!r}, {args.layers}) or {{}}")
    results = {
        "ominix": _child(sys.executable, f"run_ominix({str(dst)!r}, {args.sentences}, {args.tokens})"),
        "reference": _child(ref_python, f"run_reference({str(dst)!r}, {args.sentences}, {args.tokens})"),
    }
    print(f"GPT-SoVITS v2 published widths, GPT {args.layers}/24 layers; {args.sentences} sentence(s) x "
          f"{args.tokens} semantic tokens; {os.cpu_count()} CPU threads")
    print(f"{'runtime':<12}{'first audio s':>14}{'wall s':>9}{'audio s':>9}{'RTF':>7}{'tokens':>8}{'load s':>8}")
    for name, r in results.items():
        print(f"{name:<12}{r['first_audio_s']:>14.2f}{r['wall_s']:>9.2f}{r['audio_s']:>9.2f}"
              f"{r['wall_s'] / r['audio_s']:>7.2f}{r['tokens']:>8}{r['load_s']:>8.2f}")
    o, r = results["ominix"], results["reference"]
    speed = (r["wall_s"] / r["audio_s"]) / (o["wall_s"] / o["audio_s"])
    print(f"ominix vs reference: {speed:.2f}x real-time speed, first audio {r['first_audio_s'] / o['first_audio_s']:.2f}x sooner")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
