"""Tiny random FLUX.2 [klein] and Z-Image pipelines in the exact diffusers layout, for tests.

`build_flux2_klein(dir)` / `build_zimage(dir)` make diffusers' own modules with tiny configs
(Flux2Transformer2DModel + AutoencoderKLFlux2, ZImageTransformer2DModel + AutoencoderKL), a
transformers Qwen3ForCausalLM text encoder and the test tokenizer, randomize every tensor (norm
weights and biases too, which the libraries initialise to constants that would hide bugs) and
save the pipeline with `save_pretrained`: model_index.json, transformer/, text_encoder/, vae/,
tokenizer/, scheduler/, as a download has them. torch/diffusers are imported inside the functions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer

_TOKENIZER: dict[str, Path] = {}

# The published scheduler configs (black-forest-labs/FLUX.2-klein-4B, Tongyi-MAI/Z-Image-Turbo).
FLUX2_SCHEDULER = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential",
)  # fmt: skip
ZIMAGE_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def _tokenizer(root: Path):
    from transformers import AutoTokenizer

    if "qwen3" not in _TOKENIZER or not _TOKENIZER["qwen3"].exists():
        _TOKENIZER["qwen3"] = make_tokenizer(root / ".tokenizer-image", flavor="qwen3")
    return AutoTokenizer.from_pretrained(_TOKENIZER["qwen3"])


def _randomize(module, seed: int, scale: float = 1.0) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name and p.ndim == 1:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias") or "pad_token" in name:
                p.copy_(0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.5 * noise)
            else:
                fan_in = max(1, p[0].numel()) if p.ndim > 1 else p.shape[-1]
                p.copy_(scale * noise / fan_in**0.5)
        for name, b in module.named_buffers():  # the FLUX.2 VAE's latent batch-norm statistics
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def text_encoder(layers: int, hidden: int, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )  # fmt: skip
    model = Qwen3ForCausalLM(config)
    _randomize(model, seed)
    return model.eval()


def flux2_vae(channels=(16, 32), latent_channels: int = 4, groups: int = 8):
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        block_out_channels=channels, latent_channels=latent_channels, layers_per_block=1,
        norm_num_groups=groups, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), sample_size=64,
    )  # fmt: skip


def flux2_transformer(joint_attention_dim: int, in_channels: int = 16, guidance_channels: int = 32):
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        in_channels=in_channels, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=joint_attention_dim,
        timestep_guidance_channels=guidance_channels,
        mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, guidance_embeds=False,
    )  # fmt: skip


def build_flux2_klein(path, *, seed: int = 0, te_layers: int = 4, te_hidden: int = 32,
                      wide: bool = False) -> Path:
    """A tiny Flux2KleinPipeline (distilled, as klein 4B is) saved to `path`. `wide`: every
    linear layer's input a multiple of 64 and the VAE's norms in 32 groups, as in the real model
    (what mflux needs to quantize every layer, and what an mflux pack assumes)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    path = Path(path)
    torch.manual_seed(seed)
    vae = flux2_vae((32, 64), 16, groups=32) if wide else flux2_vae()
    transformer = flux2_transformer(3 * te_hidden, in_channels=4 * vae.config.latent_channels,
                                    guidance_channels=64 if wide else 32)  # fmt: skip
    te = text_encoder(te_layers, te_hidden, seed + 1)
    for i, module in enumerate((vae, transformer)):
        _randomize(module, seed + 2 + i)
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER), vae=vae.eval(),
        text_encoder=te, tokenizer=_tokenizer(path.parent), transformer=transformer.eval(),
        is_distilled=True,
    )  # fmt: skip
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def zimage_vae(channels=(16, 32), latent_channels: int = 4, groups: int = 8):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=channels, latent_channels=latent_channels, layers_per_block=1,
        norm_num_groups=groups, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), sample_size=64,
        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip


def zimage_transformer(cap_feat_dim: int, in_channels: int = 4, dim: int = 64):
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=in_channels, dim=dim, n_layers=2,
        n_refiner_layers=1, n_heads=dim // 16, n_kv_heads=dim // 16, norm_eps=1e-5, qk_norm=True,
        cap_feat_dim=cap_feat_dim, rope_theta=256.0, t_scale=1000.0, axes_dims=[4, 6, 6],
        axes_lens=[1024, 64, 64],
    )  # fmt: skip


def build_zimage(path, *, seed: int = 0, te_layers: int = 4, te_hidden: int = 32,
                 wide: bool = False) -> Path:
    """A tiny ZImagePipeline saved to `path` (`wide`: as build_flux2_klein's; the feed-forward's
    int(dim / 3 * 8) must be a multiple of 64 too, hence dim 192; the text encoder is then saved
    with its causal-LM head, `model.`-prefixed, as Z-Image-Turbo publishes it)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    path = Path(path)
    torch.manual_seed(seed)
    vae = zimage_vae((32, 64), 16, groups=32) if wide else zimage_vae()
    transformer = zimage_transformer(te_hidden, in_channels=vae.config.latent_channels, dim=192 if wide else 64)
    te = text_encoder(te_layers, te_hidden, seed + 1)
    for i, module in enumerate((vae, transformer)):
        _randomize(module, seed + 2 + i)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**ZIMAGE_SCHEDULER), vae=vae.eval(),
        text_encoder=te if wide else te.model, tokenizer=_tokenizer(path.parent),
        transformer=transformer.eval(),
    )  # fmt: skip
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def load_reference(path, family: str):
    """The diffusers pipeline for a tiny checkpoint directory, float32 on CPU."""
    import torch
    from diffusers import Flux2KleinPipeline, ZImagePipeline

    cls = {"flux2": Flux2KleinPipeline, "zimage": ZImagePipeline}[family]
    return cls.from_pretrained(path, torch_dtype=torch.float32)


def copy_checkpoint(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def bf16_copy(src, dst) -> Path:
    """The checkpoint with every float tensor stored in bf16, as the published files are."""
    import mlx.core as mx

    dst = copy_checkpoint(src, dst)
    for file in dst.glob("*/*.safetensors"):
        tensors = mx.load(str(file))
        mx.save_safetensors(str(file), {k: v.astype(mx.bfloat16) if mx.issubdtype(v.dtype, mx.floating) else v
                                        for k, v in tensors.items()})  # fmt: skip
    return dst


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when equal)."""
    import numpy as np

    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
