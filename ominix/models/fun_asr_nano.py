"""Fun-ASR-Nano (FunAudioLLM/Fun-ASR-Nano-2512): SenseVoice's SAN-M encoder, a Transformer adaptor
and Qwen3-0.6B, the audio frames spliced into the chat prompt.

The module tree is FunASR's, as mlx-community publishes it: `audio_encoder.*` (SenseVoice's
encoders0 / encoders / after_norm / tp_encoders / tp_norm; fsmn_block in MLX conv layout there),
`audio_adaptor.{linear1, linear2, blocks.N.{self_attn.linear_q/k/v/out, feed_forward.w_1/w_2,
norm1, norm2}}` and `llm.model.*`. `sanitize` also reads transformers' `-hf` layout
(`model.audio_tower.layers.N`, `model.multi_modal_projector`, `model.language_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models import qwen3
from ominix.models.layers import CausalLM
from ominix.models.qwen3_asr import run_embeddings
from ominix.models.sensevoice import SenseVoiceEncoderSmall

ADAPTOR_LN_EPS = 1e-5


@dataclass
class ModelArgs:
    input_size: int = 560
    encoder_conf: dict = field(default_factory=dict)
    adaptor_conf: dict = field(default_factory=dict)
    text: qwen3.ModelArgs | None = None
    frontend_conf: dict = field(default_factory=dict)
    use_low_frame_rate: bool = True
    tokenizer_path: str = "Qwen3-0.6B"

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        if "audio_encoder_conf" in config:  # FunASR / mlx-community spelling
            encoder = dict(config["audio_encoder_conf"])
            adaptor = dict(config.get("audio_adaptor_conf") or {})
        else:  # transformers' FunAsrNanoConfig
            a = config.get("audio_config") or {}
            p = config.get("adaptor_config") or {}
            blocks = int(a.get("num_hidden_layers", 70))
            tp = int(a.get("num_timestamp_prediction_layers", 20))
            encoder = {"output_size": a.get("hidden_size", 512), "attention_heads": a.get("num_attention_heads", 4),
                       "linear_units": a.get("intermediate_size", 2048), "num_blocks": blocks - tp,
                       "tp_blocks": tp, "kernel_size": a.get("fsmn_kernel_size", 11)}
            adaptor = {"encoder_dim": a.get("hidden_size", 512), "llm_dim": p.get("hidden_size", 1024),
                       "ffn_dim": p.get("projector_hidden_size", 2048), "n_layer": p.get("num_hidden_layers", 2),
                       "attention_heads": p.get("num_attention_heads", 8), "downsample_rate": 1}
        if int(adaptor.get("downsample_rate", 1)) != 1:
            raise ValueError("Fun-ASR-Nano adaptor: only downsample_rate 1 is supported")
        text = dict(config.get("text_config") or config.get("llm_config") or {})
        text.setdefault("model_type", "qwen3")
        text.setdefault("tie_word_embeddings", True)
        return cls(input_size=int(config.get("input_size", 560)), encoder_conf=encoder, adaptor_conf=adaptor,
                   text=qwen3.ModelArgs.from_dict(text), frontend_conf=dict(config.get("frontend_conf") or {}),
                   use_low_frame_rate=bool(adaptor.get("use_low_frame_rate", True)),
                   tokenizer_path=str(config.get("qwen_tokenizer_path", "Qwen3-0.6B")))


class MultiHeadedAttention(nn.Module):
    def __init__(self, heads: int, dims: int):
        super().__init__()
        self.heads = heads
        self.linear_q, self.linear_k = nn.Linear(dims, dims), nn.Linear(dims, dims)
        self.linear_v, self.linear_out = nn.Linear(dims, dims), nn.Linear(dims, dims)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        h = self.heads
        q, k, v = (p(x).reshape(b, t, h, d // h).transpose(0, 2, 1, 3) for p in (self.linear_q, self.linear_k, self.linear_v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // h) ** -0.5)
        return self.linear_out(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(dims, hidden), nn.Linear(hidden, dims)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w_2(nn.relu(self.w_1(x)))


class AdaptorBlock(nn.Module):
    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.self_attn = MultiHeadedAttention(heads, dims)
        self.feed_forward = FeedForward(dims, dims // 4)
        self.norm1 = nn.LayerNorm(dims, eps=ADAPTOR_LN_EPS)
        self.norm2 = nn.LayerNorm(dims, eps=ADAPTOR_LN_EPS)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.norm1(x))
        return x + self.feed_forward(self.norm2(x))


class AudioAdaptor(nn.Module):
    def __init__(self, conf: dict):
        super().__init__()
        llm_dim = int(conf.get("llm_dim", 1024))
        self.linear1 = nn.Linear(int(conf.get("encoder_dim", 512)), int(conf.get("ffn_dim", 2048)))
        self.linear2 = nn.Linear(int(conf.get("ffn_dim", 2048)), llm_dim)
        self.blocks = [AdaptorBlock(llm_dim, int(conf.get("attention_heads", 8))) for _ in range(int(conf.get("n_layer", 2)))]

    def __call__(self, x: mx.array) -> mx.array:
        x = self.linear2(nn.relu(self.linear1(x)))
        for block in self.blocks:
            x = block(x)
        return x


def audio_token_count(frames: int, low_frame_rate: bool) -> int:
    """How many adaptor frames FunASR splices into the prompt: with use_low_frame_rate (the
    published config) a stride-2 conv-stack length of the LFR frames, else all of them."""
    if not low_frame_rate:
        return frames
    n = 1 + (frames - 3 + 2) // 2
    n = 1 + (n - 3 + 2) // 2
    return max(1, (n - 1) // 2 + 1)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.audio_encoder = SenseVoiceEncoderSmall(args.input_size, args.encoder_conf)
        self.audio_adaptor = AudioAdaptor(args.adaptor_conf)
        self.llm = CausalLM(args.text, qwen3.Qwen3Model(args.text))

    @property
    def layers(self):
        return self.llm.layers

    def audio_features(self, feats: mx.array) -> mx.array:
        """(1, T, llm_dim) adaptor output for LFR features (1, T, 560)."""
        return self.audio_adaptor(self.audio_encoder(feats))

    def embed(self, before: list[int], audio: mx.array, after: list[int]) -> mx.array:
        """Prompt embeddings with the audio frames (1, N, H) between the two text parts."""
        embed = self.llm.model.embed_tokens
        head, tail = embed(mx.array([before])), embed(mx.array([after]))
        return mx.concatenate([head, audio.astype(head.dtype), tail], axis=1)

    def forward_embeddings(self, h: mx.array, cache=None) -> mx.array:
        return run_embeddings(self.llm, h, cache)

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for name, w in weights.items():
            name = name.removeprefix("module.")
            if name.startswith(("ctc_decoder.", "ctc.")):
                continue  # FunASR's CTC timestamp branch: not used for transcription
            if name.startswith("model.audio_tower.") or name.startswith("model.multi_modal_projector."):
                continue  # gathered below
            if name.startswith("model.language_model."):
                name = "llm.model." + name[len("model.language_model."):]
            if name in ("lm_head.weight", "llm.lm_head.weight"):
                if self.args.text.tie_word_embeddings:
                    continue
                name = "llm.lm_head.weight"
            if name.endswith("fsmn_block.weight") and w.ndim == 3 and w.shape[1] != 1:
                w = w.transpose(0, 2, 1)  # MLX conv layout (C, K, 1) -> (C, 1, K)
            out[name] = w
        out.update(_from_transformers(weights, self.args))
        return out


def _from_transformers(weights: dict, args: ModelArgs) -> dict:
    """transformers' -hf names -> FunASR's (q/k/v fused back into linear_q_k_v for the encoder)."""
    enc, out = "model.audio_tower.layers.", {}
    blocks = int(args.encoder_conf.get("num_blocks", 50))
    for name, w in weights.items():
        if name.startswith(enc):
            index, rest = name[len(enc):].split(".", 1)
            i = int(index)
            target = ("encoders0.0" if i == 0 else f"encoders.{i - 1}" if i < blocks else f"tp_encoders.{i - blocks}")
            if rest.startswith("final_layernorm."):
                target, rest = ("after_norm" if i == blocks - 1 else "tp_norm"), rest[len("final_layernorm."):]
            elif rest.startswith("self_attn.q_proj."):
                kind = rest.rsplit(".", 1)[1]
                fused = [weights[f"{enc}{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                out[f"audio_encoder.{target}.self_attn.linear_q_k_v.{kind}"] = mx.concatenate(fused, axis=0)
                continue
            elif rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                continue
            rest = (rest.replace("self_attn.o_proj.", "self_attn.linear_out.")
                    .replace("self_attn.fsmn.conv.", "self_attn.fsmn_block.")
                    .replace("input_layernorm.", "norm1.").replace("post_attention_layernorm.", "norm2.")
                    .replace("mlp.fc1.", "feed_forward.w_1.").replace("mlp.fc2.", "feed_forward.w_2."))
            out[f"audio_encoder.{target}.{rest}"] = w
        elif name.startswith("model.multi_modal_projector."):
            rest = name[len("model.multi_modal_projector."):]
            rest = (rest.replace("linear_1.", "linear1.").replace("linear_2.", "linear2.").replace("layers.", "blocks.")
                    .replace("self_attn.q_proj.", "self_attn.linear_q.").replace("self_attn.k_proj.", "self_attn.linear_k.")
                    .replace("self_attn.v_proj.", "self_attn.linear_v.").replace("self_attn.o_proj.", "self_attn.linear_out.")
                    .replace("input_layernorm.", "norm1.").replace("post_attention_layernorm.", "norm2.")
                    .replace("mlp.fc1.", "feed_forward.w_1.").replace("mlp.fc2.", "feed_forward.w_2."))
            out[f"audio_adaptor.{rest}"] = w
    return out
