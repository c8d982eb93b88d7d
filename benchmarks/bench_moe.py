"""OminiX vs mlx-lm decode speed on a mixture-of-experts model, side by side, same files.

    python benchmarks/bench_moe.py               # 4 layers, p=128 g=64 n=3
    python benchmarks/bench_moe.py --layers 2 -g 32 -n 2

The checkpoint is Qwen3-30B-A3B's shape at reduced depth: hidden 2048, 32 heads / 4 KV heads,
head_dim 128, 128 experts of width 768 with top-8 routing (norm_topk_prob), a 16,384-token
vocabulary, random weights. It is written already quantized in mlx-community's layout (experts
stacked as `mlp.switch_mlp.*`, 4-bit group 64, the router at 8 bits as mlx-lm's converter does),
one layer at a time so the float32 experts (2.4 GB per layer) never all exist at once. Two
variants: float32 scales (what OminiX's CPU policy computes in) and bf16 scales (what
mlx-community publishes; OminiX casts them to float32 on CPU, mlx-lm keeps bf16).

Each measurement runs in its own interpreter: `ominix bench --json`, and bench_llm.py's mlx-lm
worker (same loop and formulas), as pip installs it and with the same BLAS OminiX preloads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPE = {
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "vocab_size": 16384,
}
QUANT = {"group_size": 64, "bits": 4}


def config(layers: int, dtype: str) -> dict:
    router = {f"model.layers.{i}.mlp.gate": {"group_size": 64, "bits": 8} for i in range(layers)}
    quantization = {**QUANT, "mode": "affine", **router}
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        **SHAPE,
        "num_hidden_layers": layers,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "torch_dtype": dtype,
        "quantization": quantization,
        "quantization_config": quantization,
    }


def write_checkpoint(path: Path, layers: int, dtype: str) -> None:
    """Random quantized Qwen3-MoE weights in mlx-community's layout, written atomically."""
    import mlx.core as mx

    sys.path.insert(0, str(HERE))
    from bench_llm import write_tokenizer

    scale_dtype = {"float32": mx.float32, "bfloat16": mx.bfloat16}[dtype]
    mx.random.seed(0)
    h, d, m, e = (SHAPE[k] for k in ("hidden_size", "head_dim", "moe_intermediate_size",
                                      "num_experts"))  # fmt: skip
    q, kv = SHAPE["num_attention_heads"] * d, SHAPE["num_key_value_heads"] * d
    weights: dict = {}

    def quantized(name: str, shape: tuple, bits: int = 4) -> None:
        w = mx.random.normal(shape) * shape[-1] ** -0.5
        packed, scales, biases = mx.quantize(w, QUANT["group_size"], bits)
        mx.eval(packed, scales, biases)
        weights[name + ".weight"] = packed
        weights[name + ".scales"] = scales.astype(scale_dtype)
        weights[name + ".biases"] = biases.astype(scale_dtype)

    def norm(name: str, n: int) -> None:
        weights[name + ".weight"] = (1.0 + 0.05 * mx.random.normal((n,))).astype(scale_dtype)

    quantized("model.embed_tokens", (SHAPE["vocab_size"], h))
    quantized("lm_head", (SHAPE["vocab_size"], h))
    norm("model.norm", h)
    for layer in range(layers):
        p = f"model.layers.{layer}."
        norm(p + "input_layernorm", h)
        norm(p + "post_attention_layernorm", h)
        norm(p + "self_attn.q_norm", d)
        norm(p + "self_attn.k_norm", d)
        quantized(p + "self_attn.q_proj", (q, h))
        quantized(p + "self_attn.k_proj", (kv, h))
        quantized(p + "self_attn.v_proj", (kv, h))
        quantized(p + "self_attn.o_proj", (h, q))
        quantized(p + "mlp.gate", (e, h), bits=8)
        quantized(p + "mlp.switch_mlp.gate_proj", (e, m, h))
        quantized(p + "mlp.switch_mlp.up_proj", (e, m, h))
        quantized(p + "mlp.switch_mlp.down_proj", (e, h, m))

    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config(layers, dtype), indent=2))
        write_tokenizer(tmp)
        tmp.chmod(0o755)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_json(cmd: list[str]) -> dict:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def measure(runner: str, model: Path, args, blas_path: str | None) -> dict:
    common = ["-p", str(args.prompt_tokens), "-g", str(args.generation_tokens),
              "-n", str(args.trials), "--prefill-step-size", "512"]  # fmt: skip
    if runner == "ominix":
        return run_json([sys.executable, "-m", "ominix", "bench", str(model), *common, "--json"])
    cmd = [sys.executable, str(HERE / "bench_llm.py"), "--worker", str(model), *common]
    if runner == "mlx-lm+blas":
        if not blas_path:
            return {"error": "no optimized BLAS on this machine"}
        cmd += ["--preload", blas_path]
    return run_json(cmd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("-p", "--prompt-tokens", type=int, default=128)
    parser.add_argument("-g", "--generation-tokens", type=int, default=64)
    parser.add_argument("-n", "--trials", type=int, default=3)
    parser.add_argument("--scales", default="float32,bfloat16", help="comma list: float32,bfloat16")
    parser.add_argument("--runners", default="ominix,mlx-lm,mlx-lm+blas")
    parser.add_argument("--dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "ominix-bench-moe")  # fmt: skip
    args = parser.parse_args(argv)

    from ominix import _blas  # finds the BLAS; the orchestrator itself never imports mlx.core

    blas_path = _blas.blas_status()["path"] if sys.platform.startswith("linux") else None
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for dtype in [s for s in args.scales.split(",") if s]:
        path = args.dir / f"qwen3-moe-{args.layers}L-4bit-{dtype}-scales"
        if not path.exists():
            print(f"writing {path}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, __file__, "--write", str(path), str(args.layers),
                            dtype], check=True)  # fmt: skip
        for runner in [r for r in args.runners.split(",") if r]:
            print(f"{dtype} scales / {runner} ...", file=sys.stderr, flush=True)
            try:
                rows.append((dtype, runner, measure(runner, path, args, blas_path)))
            except RuntimeError as e:
                rows.append((dtype, runner, {"error": str(e).splitlines()[-1]}))
                print(e, file=sys.stderr)

    print(f"\nQwen3-30B-A3B shape, {args.layers} layers, 4-bit; prompt {args.prompt_tokens}, "
          f"generate {args.generation_tokens}, median of {args.trials}\n")
    print(f"{'scales':<9} {'runner':<12} {'prefill tok/s':>13} {'decode tok/s':>12} "
          f"{'peak GB':>8} {'decode ominix/runner':>21}")
    ours = {dtype: r for dtype, runner, r in rows if runner == "ominix"}
    for dtype, runner, r in rows:
        if "error" in r:
            print(f"{dtype:<9} {runner:<12} {r['error']}")
            continue
        mine = ours.get(dtype, {}).get("generation_tps")
        rel = ""
        if mine and runner != "ominix":
            rel = f"{mine / r['generation_tps']:.2f}x"
        print(f"{dtype:<9} {runner:<12} {r['prompt_tps']:>13.1f} {r['generation_tps']:>12.2f} "
              f"{r['peak_memory_gb']:>8.2f} {rel:>21}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--write":
        write_checkpoint(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        sys.exit(0)
    sys.exit(main())
