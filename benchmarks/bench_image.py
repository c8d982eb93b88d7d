"""Seconds per denoising step and peak memory: OminiX vs mflux and mlx-vlm, FLUX.2 [klein] 4B and
Z-Image Turbo transformers at their real widths, reduced depth, 512x512 and 1024x1024, bf16 and
4-bit.

    python benchmarks/bench_image.py                  # everything, a table + JSON lines
    python benchmarks/bench_image.py --res 512 --family flux2 --repeats 2

One denoising step = one transformer forward at the step's token count (FLUX.2: 512 text tokens
plus (side/16)^2 image tokens; Z-Image: a 64-token caption plus (side/16)^2 image tokens), run
the way each runtime runs it: ours through the pipeline's compute policy (engine/image/pipeline.py
`compute_dtypes` + engine/load.py `apply_compute_dtype`), the peers through their own modules in
float32 (their bf16 default misses BLAS on a CPU; float32 is their fastest setting here).
Weights are the modules' own random initialisation. Ours: `bf16` keeps bf16 weights and upcasts
each layer as it runs (what the loader does when memory is short); `fp32` holds float32 weights,
which is also what the loader makes of bf16 files when the pipeline at float32 fits in half the
RAM. 4-bit is MLX affine, group 64, on every linear layer whose input width allows it
(nn.quantize), for all. Each (runtime, family, size, precision) runs in its own process so peak
memory is its own.

mflux 0.24 on Linux: `pip install --no-deps mflux==0.24.0` plus piexif, toml, fonttools,
platformdirs, matplotlib, hf-transfer (see /work/shared/REFERENCES.md); mlx-vlm runs from the
venv tests/test_qwen3_vl.py builds.
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


def ours(family: str, side: int, bits: int | None, float_dtype: str | None = None):
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
    weights, dtype = compute_dtypes(mx.bfloat16, bool(bits), float_dtype, device)
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


def peer_model(runtime: str, family: str):
    """The peer's transformer built from the same config, and its precision switch."""
    if runtime == "mflux" and family == "flux2":
        from mflux.models.common.config.model_config import ModelConfig
        from mflux.models.flux2.model.flux2_transformer.transformer import Flux2Transformer as T
    elif runtime == "mflux":
        from mflux.models.common.config.model_config import ModelConfig
        from mflux.models.z_image.model.z_image_transformer.transformer import ZImageTransformer

        args = {k: v for k, v in ZIMAGE.items() if k != "n_kv_heads"}
        return ZImageTransformer(**args), ModelConfig
    elif family == "flux2":
        from mlx_vlm.models.flux2.constants import ModelConfig
        from mlx_vlm.models.flux2.transformer.transformer import Flux2Transformer as T
    else:
        from mlx_vlm.models.z_image.config import ZImageTransformerConfig
        from mlx_vlm.models.z_image.transformer import ZImageTransformer

        config = ZImageTransformerConfig.from_dict(dict(ZIMAGE, n_refiner_layers=1))
        return ZImageTransformer(config), None
    args = {k: v for k, v in FLUX2.items() if k != "axes_dims_rope"}
    return T(**args, axes_dims_rope=tuple(FLUX2["axes_dims_rope"])), ModelConfig


def peer(runtime: str, family: str, side: int, bits: int | None):
    import mlx.core as mx

    n_img = (side // 16) ** 2
    model, precision = peer_model(runtime, family)
    # The peers' default precision is bf16; on a CPU bf16 matmuls miss BLAS (~40x slower than
    # float32 at these widths), so they run here in float32, their fastest setting on this backend.
    dtype = mx.float32
    if precision is not None:
        precision.precision = dtype
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
    if runtime == "mflux":
        x = mx.random.normal((16, 1, h, w)).astype(dtype)
        caps = mx.random.normal((TEXT_TOKENS[family], 2560)).astype(dtype)
        sigmas = mx.array([1.0, 0.5, 0.0])
        return lambda: model(x, 1, sigmas, caps)
    x = mx.random.normal((1, 16, 1, h, w)).astype(dtype)
    caps = mx.random.normal((1, TEXT_TOKENS[family], 2560)).astype(dtype)
    return lambda: model(x, mx.array([0.5], dtype), caps)


RUNTIMES = ("ominix", "mflux", "mlx-vlm")
# mlx-vlm 0.7.10 pins its own dependencies: it runs from the cached venv the VLM tests build.
MLX_VLM_PYTHON = Path.home() / ".cache/ominix-test-venvs/mlx-vlm-0.7.10/bin/python"


def measure(runtime: str, family: str, side: int, precision: str, repeats: int,
            warmup: bool) -> dict:  # fmt: skip
    bits = int(precision) if precision.isdigit() else None
    # Every runtime gets the same BLAS: importing ominix preloads it before mlx.core (ominix/_blas.py;
    # the peers would otherwise run MLX's bundled reference BLAS, ~20x slower: that would measure
    # the BLAS, not the implementation).
    sys.path.insert(0, str(ROOT))
    import ominix  # noqa: F401  (preloads the BLAS)

    import mlx.core as mx

    if runtime == "ominix":
        step = ours(family, side, bits, "float32" if precision == "fp32" else None)
    else:
        step = peer(runtime, family, side, bits)
    weights_gb = mx.get_active_memory() / 1e9
    if warmup:  # a CPU has no kernels to compile; this only settles the allocator
        mx.eval(step())
        mx.clear_cache()
    mx.reset_peak_memory()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(step())
        times.append(time.perf_counter() - start)
    float_name = precision if runtime == "ominix" else "fp32"
    return {"runtime": runtime, "family": family, "size": side,
            "precision": f"{bits}bit" if bits else float_name, "s_per_step": statistics.median(times),
            "peak_gb": mx.get_peak_memory() / 1e9, "weights_gb": weights_gb}  # fmt: skip


def run_one(args, timeout: float | None) -> dict:
    """Run one configuration in a fresh process (peak memory is its own)."""
    python = str(MLX_VLM_PYTHON) if args[0] == "mlx-vlm" else sys.executable
    if args[0] == "mlx-vlm" and not MLX_VLM_PYTHON.exists():
        return {"error": [f"no {MLX_VLM_PYTHON} (run tests/test_qwen3_vl.py once)"], "args": args}
    try:
        out = subprocess.run([python, __file__, "--one", *args], capture_output=True, text=True,
                             cwd=ROOT, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": [f"no result within {timeout:.0f} s"], "args": args}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:], "args": args}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> None:
    peers = [r for r in RUNTIMES[1:] if any(r in pair for pair in rows)]
    head = f"{'family':8} {'size':>5} {'prec':>5} {'ominix s':>9} {'GB':>6}"
    for name in peers:
        head += f" {name + ' s':>11} {'GB':>6} {'ratio':>6}"
    print("\n" + head)
    for pair in rows:
        o = pair["ominix"]
        if "error" in o:
            print("error:", o["error"])
            continue
        line = f"{o['family']:8} {o['size']:>5} {o['precision']:>5} {o['s_per_step']:>9.2f} {o['peak_gb']:>6.2f}"
        for name in peers:
            m = pair.get(name, {"error": ["not run"]})
            if "error" in m:
                line += f" {'-':>11} {'-':>6} {'-':>6}"
                continue
            ratio = m["s_per_step"] / o["s_per_step"]
            line += f" {m['s_per_step']:>11.2f} {m['peak_gb']:>6.2f} {ratio:>5.2f}x"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=6,
                        metavar=("RUNTIME", "FAMILY", "SIDE", "BITS", "REPEATS", "WARMUP"))  # fmt: skip
    parser.add_argument("--family", choices=["flux2", "zimage"], action="append")
    parser.add_argument("--res", type=int, action="append")
    parser.add_argument("--bits", choices=["bf16", "fp32", "4"], action="append",
                        help="ours: bf16 weights (float32 compute), fp32 weights, or 4-bit; "
                        "the peers run fp32 for both float rows")  # fmt: skip
    parser.add_argument("--runtime", choices=RUNTIMES[1:], action="append", help="peers to run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-warmup", action="store_true", help="time the first step")
    parser.add_argument("--timeout", type=float, help="seconds per configuration")
    args = parser.parse_args()
    if args.one:
        runtime, family, side, bits, repeats, warmup = args.one
        print(json.dumps(measure(runtime, family, int(side), bits, int(repeats), warmup == "1")))
        return
    rows, peer_rows = [], {}
    for family in args.family or ["flux2", "zimage"]:
        for side in args.res or [512, 1024]:
            for bits in args.bits or ["bf16", "fp32", "4"]:
                pair = {}
                for runtime in ("ominix", *(args.runtime or RUNTIMES[1:])):
                    peer_bits = "4" if bits == "4" else "fp32"  # a peer's float row is fp32
                    key = (runtime, family, side, peer_bits)
                    if runtime != "ominix" and key in peer_rows:
                        pair[runtime] = peer_rows[key]
                        continue
                    one = [runtime, family, str(side), bits, str(args.repeats)]
                    row = run_one(one + [str(int(not args.no_warmup))], args.timeout)
                    print(json.dumps(row), flush=True)
                    pair[runtime] = row
                    if runtime != "ominix":
                        peer_rows[key] = row
                rows.append(pair)
    table(rows)


if __name__ == "__main__":
    main()
