"""GGUF files vs the same model as an MLX checkpoint, side by side in one run.

    python benchmarks/bench_gguf.py            # p=512 g=128 n=3
    python benchmarks/bench_gguf.py --quick    # p=128 g=32 n=1

A Llama-shaped model (hidden 512, 8 layers, 8 heads / 4 KV heads, intermediate 1536, vocabulary
32,000) gets random weights, written three ways from the same floats:
  gguf         llama.cpp's layout, Q8_0 and Q4_0 (gguf's quantizer; Q/K rows permuted as
               llama.cpp's converter does), loaded by OminiX as MLX affine group 32
  mlx          the Hugging Face checkpoint converted by `ominix convert -q --group-size 32`
               (8 and 4 bits), the MLX-native form of the same quantization
and measured with `ominix bench` on both and with mlx-lm on the MLX checkpoint (mlx-lm reads no
GGUF), each in its own interpreter (bench_llm.py's runners). Target: GGUF equal to MLX within noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_llm  # noqa: E402  (its runners: ominix bench, mlx-lm with the same loop)

SHAPE = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
             intermediate_size=1536, vocab_size=32000)  # fmt: skip
KINDS = {"Q8_0": 8, "Q4_0": 4}


def llama_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, i, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    d = h // SHAPE["num_attention_heads"]
    kv = SHAPE["num_key_value_heads"] * d

    def dense(rows, cols):
        return (rng.standard_normal((rows, cols)) / cols ** 0.5).astype(np.float32)

    w = {"model.embed_tokens.weight": dense(v, h), "model.norm.weight": np.ones(h, np.float32),
         "lm_head.weight": dense(v, h)}
    for n in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{n}."
        w.update({p + "self_attn.q_proj.weight": dense(h, h), p + "self_attn.k_proj.weight": dense(kv, h),
                  p + "self_attn.v_proj.weight": dense(kv, h), p + "self_attn.o_proj.weight": dense(h, h),
                  p + "mlp.gate_proj.weight": dense(i, h), p + "mlp.up_proj.weight": dense(i, h),
                  p + "mlp.down_proj.weight": dense(h, i), p + "input_layernorm.weight": np.ones(h, np.float32),
                  p + "post_attention_layernorm.weight": np.ones(h, np.float32)})  # fmt: skip
    return w


def write_hf(path: Path, weights: dict) -> Path:
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **SHAPE,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
              "tie_word_embeddings": False, "torch_dtype": "float32"}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    save_file(weights, str(path / "model.safetensors"))
    return path


def write_gguf(path: Path, weights: dict, kind: str) -> Path:
    import gguf

    from tests.gguf_checkpoints import _NAMES, permute

    qtype = gguf.GGMLQuantizationType[kind]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(SHAPE["hidden_size"])
    writer.add_block_count(SHAPE["num_hidden_layers"])
    writer.add_feed_forward_length(SHAPE["intermediate_size"])
    writer.add_head_count(SHAPE["num_attention_heads"])
    writer.add_head_count_kv(SHAPE["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(SHAPE["vocab_size"])
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}  # fmt: skip
    for name, w in weights.items():
        if name in top:
            gname = top[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            gname = f"blk.{layer}.{_NAMES[rest.rsplit('.', 1)[0]]}.weight"
        if ".q_proj." in name or ".k_proj." in name:
            heads = SHAPE["num_attention_heads" if ".q_proj." in name else "num_key_value_heads"]
            w = permute(w, heads)
        if w.ndim == 2:
            writer.add_tensor(gname, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gname, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--prompt-tokens", type=int, default=512)
    parser.add_argument("-g", "--generation-tokens", type=int, default=128)
    parser.add_argument("-n", "--trials", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompt_tokens, args.generation_tokens, args.trials = 128, 32, 1
    args.baseline_trials, args.prefill_step_size = args.trials, None
    from ominix import _blas

    blas = _blas.blas_status()["path"] if sys.platform.startswith("linux") else None
    weights = llama_weights()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hf = write_hf(root / "hf", weights)
        for kind, bits in KINDS.items():
            gguf_file = write_gguf(root / f"model-{kind}.gguf", weights, kind)
            mlx_dir = root / f"mlx-{bits}bit"
            subprocess.run([sys.executable, "-m", "ominix", "convert", str(hf), str(mlx_dir), "-q",
                            "--bits", str(bits), "--group-size", "32"], check=True,
                           capture_output=True)  # fmt: skip
            result = {"gguf": bench_llm.measure("ominix", gguf_file, args, blas),
                      "mlx": bench_llm.measure("ominix", mlx_dir, args, blas),
                      "mlx-lm": bench_llm.measure("mlx-lm", mlx_dir, args, blas)}  # fmt: skip
            rows.append((kind, result))
    print(f"\nprompt {args.prompt_tokens} tokens, generate {args.generation_tokens}, median of {args.trials}\n")
    print(f"{'type':<6} {'runner':<22} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak GB':>8}")
    for kind, result in rows:
        for runner, label in (("gguf", "ominix GGUF"), ("mlx", "ominix MLX g32"), ("mlx-lm", "mlx-lm MLX g32")):
            r = result[runner]
            print(f"{kind:<6} {label:<22} {r['prompt_tps']:>14.1f} {r['generation_tps']:>13.1f} "
                  f"{r['peak_memory_gb']:>8.3f}")
        g, m, lm = result["gguf"], result["mlx"], result["mlx-lm"]
        print(f"{kind:<6} {'GGUF / MLX':<22} {bench_llm.ratio(g['prompt_tps'], m['prompt_tps']):>14} "
              f"{bench_llm.ratio(g['generation_tps'], m['generation_tps']):>13}")
        print(f"{kind:<6} {'GGUF / mlx-lm':<22} {bench_llm.ratio(g['prompt_tps'], lm['prompt_tps']):>14} "
              f"{bench_llm.ratio(g['generation_tps'], lm['generation_tps']):>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
