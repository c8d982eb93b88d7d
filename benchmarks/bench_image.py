"""Seconds per denoising step and peak memory: OminiX vs mflux, FLUX.2 [klein] 4B and Z-Image
Turbo transformers at their real widths, reduced depth, 512x512 and 1024x1024, bf16 and 4-bit.

    python benchmarks/bench_image.py                  # everything, a table + JSON lines
    python benchmarks/bench_image.py --res 512 --family flux2 --repeats 2

One denoising step = one transformer forward at the step's token count (FLUX.2: 512 text tokens
plus (side/16)^2 image tokens; Z-Image: a 64-token caption plus (side/16)^2 image tokens), run
the way each runtime runs it: ours through the pipeline's compute policy (engine/image/pipeline.py
`compute_dtype` + engine/load.py `apply_compute_dtype`), mflux through its own modules with their
own modules in float32 (their bf16 default misses BLAS on a CPU; float32 is mflux's fastest setting
here). Weights are the modules' own random initialisation: bf16 storage for ours (as published),
float32 for mflux; 4-bit is MLX affine,
group 64, on every linear layer whose input width allows it (nn.quantize), for both. Each
(runtime, family, size, precision) runs in its own process so peak memory is its own.

mflux 0.24 on Linux: `pip install --no-deps mflux==0.24.0` plus piexif, toml, fonttools,
platformdirs, matplotlib, hf-transfer (see /work/shared/REFERENCES.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The real widths; depth reduced (the per-block cost is what the ratio measures).
FLUX2 = dict(in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=128,
             num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256,
             mlp_ratio=3.0, axes_dims_rope=[32, 32, 32, 32], rope_theta=2000, guidance_embeds=False)  # fmt: skip
ZIMAGE = dict(in_channels=16, dim=3840, n_layers=1, n_refiner_layers=1, n_heads=30, n_kv_heads=30,
              cap_feat_dim=2560, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512])  # fmt: skip
TEXT_TOKENS = {"flux2": 512, "zimage": 64}


def randomize(model, dtype) -> None:
    """The modules' own random initialisation (uniform linear weights), cast to `dtype`."""
    import mlx.core as mx

    model.set_dtype(dtype)
    mx.eval(model.parameters())


def quantize(model) -> None:
    import mlx.nn as nn

    nn.quantize(model, group_size=64, bits=4,
                class_predicate=lambda _, m: isinstance(m, nn.Linear) and m.weight.shape[-1] % 64 == 0)  # fmt: skip


def ours(family: str, side: int, bits: int | None):
    import mlx.core as mx

    from ominix.engine.image.pipeline import compute_dtypes
    from ominix.engine.load import apply_compute_dtype

    n_img = (side // 16) ** 2
    if family == "flux2":
        from ominix.engine.image.flux2 import grid_ids, text_ids
        from ominix.models import flux2 as arch

        model = arch.Model(arch.ModelArgs.from_dict(FLUX2))
    else:
        from ominix.models import zimage as arch

        model = arch.Model(arch.ModelArgs.from_dict(ZIMAGE))
    randomize(model, mx.bfloat16)
    if bits:
        quantize(model)
    device = mx.default_device()
    weights, dtype = compute_dtypes(mx.bfloat16, bool(bits), None, device)
    apply_compute_dtype(model, weights, device)
    mx.eval(model.parameters())
    if family == "flux2":
        h = w = side // 16
        x = mx.random.normal((1, n_img, 128)).astype(dtype)
        ctx = mx.random.normal((1, TEXT_TOKENS[family], 7680)).astype(dtype)
        rope = model.rope(text_ids(TEXT_TOKENS[family]), grid_ids(h, w))
        t = mx.array([0.5], dtype)
        return lambda: model(x, ctx, t, rope)
    h = w = side // 8
    layout = model.prepare([TEXT_TOKENS[family]], h // 2, w // 2)
    caps = mx.random.normal((1, layout["caps"]["width"], 2560)).astype(dtype)
    x = mx.random.normal((1, h, w, 16)).astype(dtype)
    t = mx.array([0.5])
    cap_tokens = model.embed_captions(caps, layout)  # once per image: it does not depend on t
    mx.eval(cap_tokens)
    return lambda: model(x, t, cap_tokens, layout)


def mflux(family: str, side: int, bits: int | None):
    import mlx.core as mx

    n_img = (side // 16) ** 2
    if family == "flux2":
        from mflux.models.flux2.model.flux2_transformer.transformer import Flux2Transformer

        args = {k: v for k, v in FLUX2.items() if k != "axes_dims_rope"}
        model = Flux2Transformer(**args, axes_dims_rope=tuple(FLUX2["axes_dims_rope"]))
    else:
        from mflux.models.z_image.model.z_image_transformer.transformer import ZImageTransformer

        args = {k: v for k, v in ZIMAGE.items() if k != "n_kv_heads"}
        model = ZImageTransformer(**args)
    # mflux's default precision is bf16; on a CPU its bf16 matmuls miss BLAS (~17x slower than
    # float32 at these widths), so it runs here in float32, its fastest setting on this backend.
    from mflux.models.common.config.model_config import ModelConfig

    dtype = ModelConfig.precision = mx.float32
    randomize(model, dtype)
    if bits:
        quantize(model)
    mx.eval(model.parameters())
    if family == "flux2":
        h = w = side // 16
        x = mx.random.normal((1, n_img, 128)).astype(dtype)
        ctx = mx.random.normal((1, TEXT_TOKENS[family], 7680)).astype(dtype)
        img_ids = mx.stack([mx.zeros(h * w, mx.int32), mx.repeat(mx.arange(h), w),
                            mx.tile(mx.arange(w), h), mx.zeros(h * w, mx.int32)], axis=-1)[None]  # fmt: skip
        n = TEXT_TOKENS[family]
        txt_ids = mx.stack([mx.zeros(n, mx.int32)] * 3 + [mx.arange(n)], axis=-1)[None]
        return lambda: model(x, ctx, mx.array([0.5], dtype), img_ids, txt_ids)
    h = w = side // 8
    x = mx.random.normal((16, 1, h, w)).astype(dtype)
    caps = mx.random.normal((TEXT_TOKENS[family], 2560)).astype(dtype)
    sigmas = mx.array([1.0, 0.5, 0.0])
    return lambda: model(x, 1, sigmas, caps)


def measure(runtime: str, family: str, side: int, bits: int | None, repeats: int) -> dict:
    import mlx.core as mx

    if runtime == "ominix":
        sys.path.insert(0, str(ROOT))
    step = (ours if runtime == "ominix" else mflux)(family, side, bits)
    mx.eval(step())  # warm-up (also builds any caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(step())
        times.append(time.perf_counter() - start)
    float_name = "bf16" if runtime == "ominix" else "fp32"
    return {"runtime": runtime, "family": family, "size": side, "precision": f"{bits}bit" if bits else float_name,
            "s_per_step": statistics.median(times), "peak_gb": mx.get_peak_memory() / 1e9}  # fmt: skip


def run_one(args) -> dict:
    """Run one configuration in a fresh process (peak memory is its own)."""
    cmd = [sys.executable, __file__, "--one", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:], "args": args}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=5, metavar=("RUNTIME", "FAMILY", "SIDE", "BITS", "REPEATS"))
    parser.add_argument("--family", choices=["flux2", "zimage"], action="append")
    parser.add_argument("--res", type=int, action="append")
    parser.add_argument("--bits", choices=["bf16", "4"], action="append")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.one:
        runtime, family, side, bits, repeats = args.one
        bits = None if bits == "bf16" else int(bits)
        print(json.dumps(measure(runtime, family, int(side), bits, int(repeats))))
        return
    rows = []
    for family in args.family or ["flux2", "zimage"]:
        for side in args.res or [512, 1024]:
            for bits in args.bits or ["bf16", "4"]:
                pair = {}
                for runtime in ("ominix", "mflux"):
                    row = run_one([runtime, family, str(side), bits, str(args.repeats)])
                    print(json.dumps(row), flush=True)
                    pair[runtime] = row
                rows.append(pair)
    print(f"\n{'family':8} {'size':>5} {'prec':>5} {'ominix s/step':>14} {'mflux s/step':>13} "
          f"{'ratio':>6} {'ominix GB':>10} {'mflux GB':>9}")  # fmt: skip
    for pair in rows:
        o, m = pair["ominix"], pair["mflux"]
        if "error" in o or "error" in m:
            print("error:", o.get("error") or m.get("error"))
            continue
        print(f"{o['family']:8} {o['size']:>5} {o['precision']:>5} {o['s_per_step']:>14.2f} "
              f"{m['s_per_step']:>13.2f} {m['s_per_step'] / o['s_per_step']:>5.2f}x "
              f"{o['peak_gb']:>10.2f} {m['peak_gb']:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
