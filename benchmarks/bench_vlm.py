"""OminiX vs mlx-vlm 0.7.10 on the same Qwen3-VL checkpoint files: one picture + a question.

    python benchmarks/bench_vlm.py --peer-python ~/.cache/ominix-test-venvs/mlx-vlm-0.7.10/bin/python
    python benchmarks/bench_vlm.py --quick      # smaller picture, fewer tokens, one trial

The checkpoint is a small Qwen3-VL with random weights in the mlx-vlm layout (the names
mlx-community publishes): text hidden 1024, 8 layers, 8 heads / 4 KV heads of 128, intermediate
3072, the real 151,936-token vocabulary, tied embeddings, mrope [24, 20, 20]; vision hidden 512,
8 blocks, DeepStack taps at 1/3/5, patch 16, merge 2. A 448x448 picture is 784 patches -> 196
image tokens, after ~40 text tokens.

Both runners get the same preprocessed patches (OminiX's processor output, saved once) and the
same prompt ids, in their own interpreter: vision = the vision tower alone; ttft = vision tower +
prefill of the whole prompt + the first token; decode tok/s over the tokens after the first,
greedy. mlx-vlm needs its own venv (its dependency list is long; only mlx, transformers and
Pillow are needed to run its model code, installed with `--no-deps mlx-vlm`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # this source tree's ominix, here and in the runners
sys.path.insert(0, str(ROOT))
import ominix  # noqa: E402,F401  (before mlx.core: the BLAS preload, and its path for the +blas runner)

TEXT = dict(model_type="qwen3_vl_text", hidden_size=1024, num_hidden_layers=8, num_attention_heads=8,
            num_key_value_heads=4, head_dim=128, intermediate_size=3072, vocab_size=151936, rms_norm_eps=1e-6,
            max_position_embeddings=32768, rope_theta=5000000.0, tie_word_embeddings=True, hidden_act="silu",
            rope_scaling={"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"})
VISION = dict(model_type="qwen3_vl", depth=8, hidden_size=512, hidden_act="gelu_pytorch_tanh", intermediate_size=2048,
              num_heads=8, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
              out_hidden_size=1024, num_position_embeddings=2304, deepstack_visual_indexes=[1, 3, 5])
CONFIG = dict(architectures=["Qwen3VLForConditionalGeneration"], model_type="qwen3_vl", text_config=TEXT,
              vision_config=VISION, image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
              vision_end_token_id=151653, tie_word_embeddings=True)

OMINIX = r"""
import json, sys, time
import ominix
import mlx.core as mx, numpy as np
from ominix.engine.load import load_model
from ominix.engine.images import ProcessedImage
from ominix.engine.llm.generate import generate_step
from ominix.engine.llm.sample import Sampler, SamplingParams
from ominix.engine.vlm import VisionPrompt, WithMedia
path, gen, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model, _ = load_model(path)
inp = np.load(path + "/inputs.npz")
image = ProcessedImage(inp["patches"], tuple(int(g) for g in inp["grid"]))
ids = inp["ids"].tolist()
out = []
for _ in range(trials + 1):
    t0 = time.perf_counter(); e, d = model.encode_image(image.patches, image.grid); mx.eval(e, d)
    vision = time.perf_counter() - t0
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    media = VisionPrompt(model, ids, [image]).encode_all()
    steps = generate_step(WithMedia(model, media), ids, Sampler(SamplingParams(temperature=0.0)), max_tokens=gen)
    next(steps); ttft = time.perf_counter() - t0
    t1 = time.perf_counter(); n = sum(1 for _ in steps); decode = time.perf_counter() - t1
    out.append(dict(vision_s=vision, ttft_s=ttft, decode_tps=n / decode, peak_gb=mx.get_peak_memory() / 1e9))
print(json.dumps(out[1:]))
"""

PEER = r"""
import ctypes, json, os, sys, time
if os.environ.get("PRELOAD_BLAS"):  # the BLAS OminiX loads, before mlx.core (the +blas runner)
    ctypes.CDLL(os.environ["PRELOAD_BLAS"], mode=ctypes.RTLD_GLOBAL)
import mlx.core as mx, numpy as np
from mlx_vlm.models.qwen3_vl import Model, ModelConfig
from mlx_vlm.models.cache import KVCache
path, gen, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = json.load(open(path + "/config.json"))
model = Model(ModelConfig.from_dict(config))
weights = mx.load(path + "/model.safetensors")
weights = model.vision_tower.sanitize(model.sanitize(weights))
model.load_weights(list(weights.items()))
mx.eval(model.parameters())
inp = np.load(path + "/inputs.npz")
pixels = mx.array(inp["patches"]); grid = mx.array(inp["grid"][None].astype(np.int32))
ids = mx.array(inp["ids"][None].astype(np.int32))
out = []
for _ in range(trials + 1):
    t0 = time.perf_counter(); e, d = model.vision_tower(pixels, grid); mx.eval(e, d)
    vision = time.perf_counter() - t0
    mx.reset_peak_memory()
    model.language_model._rope_deltas = None; model.language_model._position_ids = None
    cache = [KVCache() for _ in model.language_model.layers]
    t0 = time.perf_counter()
    logits = model(ids, pixels, cache=cache, image_grid_thw=grid).logits
    token = mx.argmax(logits[:, -1], axis=-1); mx.eval(token); ttft = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(gen - 1):  # one step queued ahead, as mlx-vlm's own loop does
        nxt = mx.argmax(model.language_model(token[None], cache=cache).logits[:, -1], axis=-1)
        mx.async_eval(nxt); token.item(); token = nxt
    token.item(); decode = time.perf_counter() - t1
    out.append(dict(vision_s=vision, ttft_s=ttft, decode_tps=(gen - 1) / decode, peak_gb=mx.get_peak_memory() / 1e9))
print(json.dumps(out[1:]))
"""


def write_checkpoint(path: Path, side: int) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from ominix.engine.images import ImageProcessor
    from ominix.models.qwen3_vl import Model, ModelArgs

    mx.random.seed(0)
    model = Model(ModelArgs.from_dict(CONFIG))
    weights = {k: (v * 0.5).astype(mx.float32) for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps({**CONFIG, "torch_dtype": "float32"}))
    rng = np.random.default_rng(0)
    from PIL import Image

    picture = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    processed = ImageProcessor(min_pixels=side * side, max_pixels=side * side)(picture)
    n = model.image_tokens(processed.grid)
    ids = list(range(1000, 1020)) + [151652] + [151655] * n + [151653] + list(range(2000, 2020))
    np.savez(path / "inputs.npz", patches=processed.patches, grid=np.array(processed.grid), ids=np.array(ids))


def run(python: str, code: str, path: Path, gen: int, trials: int, blas: str | None = None) -> dict:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if blas:
        env["PRELOAD_BLAS"] = blas
    result = subprocess.run([python, "-c", code, str(path), str(gen), str(trials)], capture_output=True, text=True,
                            timeout=3600, env=env, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer-python", help="python of a venv with mlx-vlm 0.7.10")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plain", action="store_true", help="also time mlx-vlm with MLX's own BLAS at full size")
    args = parser.parse_args()
    side, gen, trials = (224, 16, 1) if args.quick else (448, 64, 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        write_checkpoint(path, side)
        results = {"ominix": run(sys.executable, OMINIX, path, gen, trials)}
        if args.peer_python:
            from ominix import _blas

            if args.quick or args.plain:  # MLX's bundled reference BLAS: minutes per prefill at 448px
                results["mlx-vlm"] = run(args.peer_python, PEER, path, gen, trials)
            blas = _blas.blas_status()["path"] if sys.platform.startswith("linux") else None
            if blas:
                results["mlx-vlm+blas"] = run(args.peer_python, PEER, path, gen, trials, blas)
    print(f"Qwen3-VL (random, float32), {side}x{side} picture, {gen} tokens, median of {trials}")
    print(f"{'runner':<13} {'vision s':>9} {'ttft s':>8} {'decode tok/s':>13} {'peak GB':>8}")
    for name, r in results.items():
        print(f"{name:<13} {r['vision_s']:>9.3f} {r['ttft_s']:>8.3f} {r['decode_tps']:>13.1f} {r['peak_gb']:>8.2f}")
    o = results["ominix"]
    for peer in ("mlx-vlm", "mlx-vlm+blas"):
        if peer in results:
            p = results[peer]
            print(f"ominix vs {peer}: vision {p['vision_s'] / o['vision_s']:.2f}x faster, ttft "
                  f"{p['ttft_s'] / o['ttft_s']:.2f}x faster, decode {o['decode_tps'] / p['decode_tps']:.2f}x")


if __name__ == "__main__":
    main()
