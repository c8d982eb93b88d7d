"""OminiX vs mlx-lm, side by side, on the same checkpoint files.

    python benchmarks/bench_llm.py            # p=512 g=128 n=3, bf16 / float32 / 8-bit / 4-bit
    python benchmarks/bench_llm.py --quick    # smoke run: short prompt, one trial, bf16 + 4-bit

The checkpoints are a small Qwen3 (hidden 512, 8 layers, 8 heads / 4 KV heads, head_dim 64,
intermediate 1536, the real 151,936-token vocabulary, tied embeddings) with random weights, written
in the Hugging Face layout in bf16 and float32; the 8-bit and 4-bit variants (group 64) come from
mlx-lm's own `convert` of the bf16 files, so they carry bf16 scales as mlx-community publishes them.

Every measurement runs in its own interpreter so the BLAS each one uses is controlled:
  ominix           `ominix bench --json` (OminiX preloads an optimized BLAS on Linux)
  mlx-lm           mlx-lm exactly as pip installs it (MLX's bundled reference BLAS on Linux)
  mlx-lm+blas      mlx-lm with the same BLAS ctypes-loaded before mlx.core (what OminiX does)
mlx-lm is timed with the same loop and formulas as `ominix bench` (random prompt ids, greedy, TTFT =
time to the first token, decode tok/s over the tokens after the first, peak = mx.get_peak_memory()).

The machine's float32 GEMM peak is measured in the same run with numpy; prefill is also reported as
a share of it, counting the useful FLOPs of a prefill (every layer's matmuls and causal attention,
and the LM head for the last position only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = {
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "intermediate_size": 1536,
    "vocab_size": 151936,
}
VARIANTS = ("bf16", "float32", "8bit", "4bit")
RUNNERS = ("ominix", "mlx-lm", "mlx-lm+blas")
MLX_LM_PREFILL_STEP = 2048  # mlx_lm.generate.generate_step's default
# What the issue asks for, reported against (never asserted): (metric, baseline runner) -> ratio.
TARGETS = {
    "4bit": {"prompt_tps": 5.0, "generation_tps": 5.0, "peak_memory_gb": 1.1},
    "8bit": {"prompt_tps": 5.0, "generation_tps": 5.0, "peak_memory_gb": 1.1},
    "bf16": {"prompt_tps": 1.0, "generation_tps": 1.0, "peak_memory_gb": 1.1},
    "float32": {"prompt_tps": 10.0, "generation_tps": 1.5, "peak_memory_gb": 1.1},
}


# --- checkpoints -------------------------------------------------------------------------------


def qwen3_config(dtype: str) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        **SHAPE,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
    }


def qwen3_weights(seed: int = 0) -> dict:
    """Random weights named as in the Hugging Face checkpoint (float32 numpy arrays)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, i, d = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["head_dim"]
    q, kv = SHAPE["num_attention_heads"] * d, SHAPE["num_key_value_heads"] * d

    def dense(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * (cols**-0.5)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.05 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    w = {"model.embed_tokens.weight": dense(SHAPE["vocab_size"], h), "model.norm.weight": norm(h)}
    for layer in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = dense(q, h)
        w[p + "self_attn.k_proj.weight"] = dense(kv, h)
        w[p + "self_attn.v_proj.weight"] = dense(kv, h)
        w[p + "self_attn.o_proj.weight"] = dense(h, q)
        w[p + "self_attn.q_norm.weight"] = norm(d)
        w[p + "self_attn.k_norm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = dense(i, h)
        w[p + "mlp.up_proj.weight"] = dense(i, h)
        w[p + "mlp.down_proj.weight"] = dense(h, i)
    return w


def write_tokenizer(path: Path) -> None:
    """A minimal word-level tokenizer: mlx-lm's convert insists on one; the benchmark never uses it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<|endoftext|>": 1, "<|im_end|>": 2}
    vocab.update({f"w{n}": n + 3 for n in range(61)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<unk>",
                "model_max_length": 40960,
            }
        )
    )


def write_hf_checkpoint(path: Path, dtype: str, weights: dict) -> None:
    """config.json + model.safetensors (+ tokenizer) in `dtype`, written atomically."""
    import mlx.core as mx

    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        mx_dtype = {"bfloat16": mx.bfloat16, "float32": mx.float32}[dtype]
        arrays = {k: mx.array(v).astype(mx_dtype) for k, v in weights.items()}
        mx.save_safetensors(str(tmp / "model.safetensors"), arrays, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(qwen3_config(dtype), indent=2))
        write_tokenizer(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def quantize_with_mlx_lm(src: Path, dst: Path, bits: int) -> None:
    """mlx-lm's convert, as mlx-community runs it: affine, group 64, from the bf16 checkpoint."""
    from mlx_lm.convert import convert

    tmp = dst.parent / f".{dst.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert(str(src), str(tmp), quantize=True, q_group_size=64, q_bits=bits)
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_checkpoints(root: Path, variants) -> dict[str, Path]:
    """Build (or reuse) every variant under `root`; returns variant -> directory."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {v: root / f"qwen3-bench-{v}" for v in VARIANTS}
    needed = set(variants)
    if needed & {"8bit", "4bit"}:
        needed.add("bf16")
    weights = None
    for variant in ("bf16", "float32"):
        if variant in needed and not paths[variant].exists():
            weights = weights if weights is not None else qwen3_weights()
            print(f"writing {paths[variant]}", file=sys.stderr)
            write_hf_checkpoint(paths[variant], {"bf16": "bfloat16"}.get(variant, variant), weights)
    for variant, bits in (("8bit", 8), ("4bit", 4)):
        if variant in needed and not paths[variant].exists():
            print(f"quantizing {paths[variant]} with mlx-lm", file=sys.stderr)
            quantize_with_mlx_lm(paths["bf16"], paths[variant], bits)
    return {v: paths[v] for v in variants}


# --- the machine's sgemm peak ------------------------------------------------------------------


def sgemm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GEMM rate numpy (its own OpenBLAS) reaches here: the ceiling for prefill."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up threads and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def prefill_flops(prompt_tokens: int) -> float:
    """Useful FLOPs of one prefill: layer matmuls, causal attention, LM head for the last token."""
    h, i, d = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["head_dim"]
    heads, kv_heads, layers = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"], SHAPE["num_hidden_layers"]
    per_token = h * (heads * d) * 2 + h * (kv_heads * d) * 2 + 3 * h * i
    attention = 2 * 2 * heads * d * prompt_tokens * (prompt_tokens + 1) / 2
    return layers * (2 * per_token * prompt_tokens + attention) + 2 * h * SHAPE["vocab_size"]


# --- the mlx-lm worker (runs in its own interpreter) -----------------------------------------------


def mlx_lm_worker(model: str, prompt_tokens: int, generation_tokens: int, trials: int,
                  prefill_step_size: int, preload: str | None) -> dict:
    """Time mlx-lm's generate_step with the loop and formulas `ominix bench` uses."""
    if preload:
        import ctypes

        ctypes.CDLL(preload, mode=ctypes.RTLD_GLOBAL)  # before mlx.core, as OminiX does
    import mlx.core as mx
    import numpy as np
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load_model

    model_obj, config = load_model(Path(model))
    vocab = config["vocab_size"]

    def trial(seed: int, prompt_tokens: int = prompt_tokens, generation_tokens: int = generation_tokens) -> dict:
        # The same ids `ominix bench` draws for this seed.
        prompt = mx.array(np.random.default_rng(seed).integers(0, vocab, prompt_tokens), dtype=mx.uint32)
        mx.eval(prompt)
        mx.reset_peak_memory()
        start = time.perf_counter()
        first = last = None
        count = 0
        for token, _ in generate_step(prompt, model_obj, max_tokens=generation_tokens,
                                      prefill_step_size=prefill_step_size):
            int(token)  # the token is ready
            last = time.perf_counter()
            first = first or last
            count += 1
        return {
            "ttft_s": first - start,
            "prompt_tps": prompt_tokens / (first - start),
            "generation_tps": (count - 1) / (last - first) if count > 1 else 0.0,
            "generated_tokens": count,
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
        }

    trial(1000, min(prompt_tokens, 64), min(generation_tokens, 8))  # short warm-up, as ominix bench
    runs = [trial(seed) for seed in range(trials)]
    blas = [line.split()[-1] for line in open("/proc/self/maps") if "libopenblas" in line and "64_" not in line] if sys.platform.startswith("linux") else []
    return {
        "runner": "mlx-lm",
        "blas": blas[0] if blas else None,
        **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
        "trials": runs,
    }


# --- orchestration -----------------------------------------------------------------------------


def run_json(cmd: list[str], env: dict) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def measure(runner: str, model: Path, args, blas_path: str | None) -> dict:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    trials = args.trials if runner == "ominix" else args.baseline_trials
    common = ["-p", str(args.prompt_tokens), "-g", str(args.generation_tokens), "-n", str(trials)]
    if runner == "ominix":
        # Each runtime chunks prompts its own way unless --prefill-step-size is given.
        step = ["--prefill-step-size", str(args.prefill_step_size)] if args.prefill_step_size else []
        cmd = [sys.executable, "-m", "ominix", "bench", str(model), *common, *step, "--json"]
        return run_json(cmd, env)
    cmd = [sys.executable, __file__, "--worker", str(model), *common,
           "--prefill-step-size", str(args.prefill_step_size or MLX_LM_PREFILL_STEP)]
    if runner == "mlx-lm+blas":
        if not blas_path:
            return {"error": "no optimized BLAS on this machine"}
        cmd += ["--preload", blas_path]
    return run_json(cmd, env)


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def print_table(results: dict, args, peak: float) -> None:
    print(f"\nprompt {args.prompt_tokens} tokens, generate {args.generation_tokens}, median of "
          f"{args.trials} trial(s) (mlx-lm: {args.baseline_trials}); "
          f"float32 GEMM peak here (numpy): {peak:.0f} GFLOP/s\n")
    header = (f"{'variant':<8} {'runner':<12} {'prefill tok/s':>13} {'decode tok/s':>12} {'TTFT ms':>8} "
              f"{'peak GB':>8} {'% sgemm':>8}   {'prefill':>14} {'decode':>14} {'memory':>14}")
    print(header)
    print(" " * 78 + "ratio ominix / runner")
    print("-" * len(header))
    for variant, by_runner in results.items():
        ours = by_runner.get("ominix", {})
        for runner in RUNNERS:
            r = by_runner.get(runner)
            if not r or "error" in r:
                print(f"{variant:<8} {runner:<12} {(r or {}).get('error', 'not run')}")
                continue
            share = prefill_flops(args.prompt_tokens) * r["prompt_tps"] / args.prompt_tokens / 1e9 / peak
            line = (f"{variant:<8} {runner:<12} {r['prompt_tps']:>13.1f} {r['generation_tps']:>12.1f} "
                    f"{r['ttft_s'] * 1000:>8.1f} {r['peak_memory_gb']:>8.3f} {share:>7.1%}")
            if runner != "ominix" and "error" not in ours:
                line += (f"   {ratio(ours.get('prompt_tps'), r['prompt_tps']):>14}"
                         f" {ratio(ours.get('generation_tps'), r['generation_tps']):>14}"
                         f" {ratio(ours.get('peak_memory_gb'), r['peak_memory_gb']):>14}")
            print(line)
    print("\ntargets vs mlx-lm as pip installs it (reported, not asserted):")
    for variant, by_runner in results.items():
        ours, base = by_runner.get("ominix", {}), by_runner.get("mlx-lm", {})
        if "prompt_tps" not in ours or "prompt_tps" not in base:
            continue
        parts = []
        for metric, target in TARGETS[variant].items():
            got = ours[metric] / base[metric]
            met = got <= target if metric == "peak_memory_gb" else got >= target
            sign = "<=" if metric == "peak_memory_gb" else ">="
            parts.append(f"{metric} {got:.2f}x ({sign}{target}x {'met' if met else 'MISSED'})")
        print(f"  {variant:<8} " + "; ".join(parts))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: p=32 g=8 n=1, bf16 and 4-bit")
    parser.add_argument("-p", "--prompt-tokens", type=int, default=512)
    parser.add_argument("-g", "--generation-tokens", type=int, default=128)
    parser.add_argument("-n", "--trials", type=int, default=3)
    parser.add_argument("--baseline-trials", type=int, help="trials for the mlx-lm runs (default: -n); "
                        "mlx-lm's quantized matmuls on Linux CPUs take minutes per trial")
    parser.add_argument("--prefill-step-size", type=int, default=None,
                        help="force one prompt chunk size on every runner (default: each its own)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ",".join(VARIANTS))
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma list of " + ",".join(RUNNERS))
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "ominix-bench-llm",
                        help="where the checkpoints are written (reused across runs)")
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time mlx-lm on this model
    parser.add_argument("--preload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompt_tokens, args.generation_tokens, args.trials = 32, 8, 1
        if args.variants == ",".join(VARIANTS):
            args.variants = "bf16,4bit"
    args.baseline_trials = args.baseline_trials or args.trials
    args.variants = [v for v in args.variants.split(",") if v]
    args.runners = [r for r in args.runners.split(",") if r]
    for v in args.variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    for r in args.runners:
        if r not in RUNNERS:
            parser.error(f"unknown runner {r!r}; choose from {', '.join(RUNNERS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = mlx_lm_worker(args.worker, args.prompt_tokens, args.generation_tokens, args.trials,
                               args.prefill_step_size, args.preload)
        print(json.dumps(result))
        return 0

    # The orchestrator never imports mlx.core itself; it only finds the BLAS the workers will use.
    from ominix import _blas

    blas_path = _blas.blas_status()["path"] if sys.platform.startswith("linux") else None
    checkpoints = make_checkpoints(args.dir, args.variants)
    peak = sgemm_peak_gflops()
    results: dict = {}
    for variant, path in checkpoints.items():
        results[variant] = {}
        for runner in args.runners:
            print(f"{variant} / {runner} ...", file=sys.stderr, flush=True)
            try:
                results[variant][runner] = measure(runner, path, args, blas_path)
            except RuntimeError as e:
                results[variant][runner] = {"error": str(e).splitlines()[-1]}
                print(e, file=sys.stderr)
    # Measured again at the end: on a shared machine the best of the two is the truer ceiling.
    peak = max(peak, sgemm_peak_gflops())
    print_table(results, args, peak)
    if args.json:
        args.json.write_text(json.dumps({"sgemm_peak_gflops": peak, "args": {
            k: v for k, v in vars(args).items() if k in ("prompt_tokens", "generation_tokens", "trials", "prefill_step_size")
        }, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
