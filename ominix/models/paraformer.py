"""FunASR Paraformer (non-autoregressive ASR): SAN-M encoder, CIF predictor, SAN-M decoder.

Built from the ModelScope `config.yaml` (encoder_conf / predictor_conf / decoder_conf); the module
tree is named like `model.pt` (`encoder.encoders0.0...`, `predictor.cif_conv1d`,
`decoder.decoders.N.src_attn.linear_k_v`, ...). One utterance (B=1) per call: the engine feeds one
audio window at a time. The CIF integrate-and-fire step runs on the host (numpy, float64 prefix sums
as FunASR does) because it is a few hundred scalars; the embeddings it selects are one matmul.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ominix.models.sanm import (EncoderLayerSANM, FeedForward, FSMNBlock, TorchConv1d,
                                fsmn_left_pad, layer_norm, shifted_sum, sinusoidal_encoding)


@dataclass
class ModelArgs:
    model: str = "Paraformer"
    input_size: int = 560
    vocab_size: int = 8404
    encoder_conf: dict = field(default_factory=dict)
    decoder_conf: dict = field(default_factory=dict)
    predictor_conf: dict = field(default_factory=dict)
    blank_id: int = 0
    sos: int = 1
    eos: int = 2

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        """From FunASR's config.yaml; input_size defaults to n_mels * lfr_m of the front end."""
        if config.get("encoder") not in (None, "SANMEncoder", "sanm"):
            raise ValueError(f"Paraformer encoder '{config.get('encoder')}' is not supported (SANMEncoder only)")
        front = config.get("frontend_conf") or {}
        model_conf = config.get("model_conf") or {}
        input_size = config.get("input_size") or int(front.get("n_mels", 80)) * int(front.get("lfr_m", 1))
        vocab = config.get("vocab_size") or len((config.get("tokenizer_conf") or {}).get("token_list") or []) or 8404
        return cls(model=config.get("model", "Paraformer"), input_size=int(input_size), vocab_size=int(vocab),
                   encoder_conf=dict(config.get("encoder_conf") or {}),
                   decoder_conf=dict(config.get("decoder_conf") or {}),
                   predictor_conf=dict(config.get("predictor_conf") or {}),
                   blank_id=int(model_conf.get("blank_id", 0)), sos=int(model_conf.get("sos", 1)),
                   eos=int(model_conf.get("eos", 2)))


class SANMEncoder(nn.Module):
    def __init__(self, input_size: int, conf: dict):
        super().__init__()
        dims = int(conf.get("output_size", 256))
        heads, hidden = int(conf.get("attention_heads", 4)), int(conf.get("linear_units", 2048))
        kernel, shift = int(conf.get("kernel_size", 11)), int(conf.get("sanm_shfit", 0))
        blocks = int(conf.get("num_blocks", 6))
        if conf.get("input_layer", "pe") != "pe" or conf.get("selfattention_layer_type", "sanm") != "sanm":
            raise ValueError("Paraformer encoder: only input_layer 'pe' with SAN-M self-attention is supported")
        self.dims = dims
        self.encoders0 = [EncoderLayerSANM(input_size, dims, heads, hidden, kernel, shift)]
        self.encoders = [EncoderLayerSANM(dims, dims, heads, hidden, kernel, shift) for _ in range(blocks - 1)]
        self.after_norm = layer_norm(dims)

    def __call__(self, feats: mx.array) -> mx.array:
        x = feats * (self.dims ** 0.5)
        x = x + sinusoidal_encoding(x.shape[1], x.shape[2]).astype(x.dtype)
        for layer in self.encoders0 + self.encoders:
            x = layer(x)
        return self.after_norm(x)


class CifPredictorV2(nn.Module):
    """Per-frame weights alpha = relu(sigmoid(linear(relu(conv(h)))) * smooth - noise)."""

    def __init__(self, conf: dict):
        super().__init__()
        idim = int(conf.get("idim", 512))
        self.l_order, self.r_order = int(conf.get("l_order", 1)), int(conf.get("r_order", 1))
        self.cif_conv1d = TorchConv1d(idim, idim, self.l_order + self.r_order + 1)
        self.cif_output = nn.Linear(idim, 1)
        self.threshold = float(conf.get("threshold", 1.0))
        self.tail_threshold = float(conf.get("tail_threshold", 0.0))
        self.smooth_factor = float(conf.get("smooth_factor", 1.0))
        self.noise_threshold = float(conf.get("noise_threshold", 0.0))

    def __call__(self, hidden: mx.array) -> mx.array:
        x = nn.relu(self.cif_conv1d(hidden, self.l_order, self.r_order))
        alphas = mx.sigmoid(self.cif_output(x))[..., 0]
        return nn.relu(alphas * self.smooth_factor - self.noise_threshold)


@dataclass
class CifResult:
    alphas: np.ndarray  # (T + tail,) per-frame weights, the tail frame included
    fires: np.ndarray  # FunASR's "peaks": 1 + fractional part at a firing frame, else the fraction
    fire_frames: np.ndarray  # frame index of each token's fire
    weights: np.ndarray  # (tokens, T) how much of each encoder frame goes into each token
    token_num: int


def integrate_and_fire(alphas: np.ndarray, frames: int, tail: float) -> CifResult:
    """FunASR's cif_v1 with tail processing, as a (tokens, frames) weight matrix."""
    a = np.asarray(alphas, dtype=np.float32)[:frames]
    if tail > 0:
        a = np.concatenate([a, np.array([tail], dtype=np.float32)])
    prefix = np.cumsum(a, dtype=np.float64).astype(np.float32)
    floor = np.floor(prefix)
    before = np.concatenate([[0.0], floor[:-1]]).astype(np.float32)
    fired = (floor - before) > 0
    fires = fired.astype(np.float32) + prefix - floor
    token_num = int(np.floor(a.sum(dtype=np.float32)))
    fire_frames = np.nonzero(fired)[0]
    weights = np.zeros((token_num, a.shape[0]), dtype=np.float32)
    start, carry = 0, 0.0  # carry: the part of the previous firing frame left for this token
    for k, f in enumerate(fire_frames[:token_num]):
        remain = float(prefix[f] - floor[f])
        weights[k, start:f + 1] = a[start:f + 1]
        if k > 0:
            weights[k, start - 1] += carry
        weights[k, f] -= remain
        start, carry = f + 1, remain
    return CifResult(a, fires, fire_frames, weights[:, :frames], token_num)


class DecoderSelfAttention(nn.Module):
    """MultiHeadedAttentionSANMDecoder: the decoder's "self-attention" is an FSMN memory only."""

    def __init__(self, dims: int, kernel: int, shift: int):
        super().__init__()
        self.fsmn_block = FSMNBlock(dims, kernel)
        self.left = fsmn_left_pad(kernel, shift)

    def __call__(self, x: mx.array) -> mx.array:
        return shifted_sum(x, self.fsmn_block.weight, self.left) + x


class CrossAttention(nn.Module):
    def __init__(self, heads: int, dims: int, memory_dims: int | None = None):
        super().__init__()
        self.heads, self.dims = heads, dims
        self.linear_q = nn.Linear(dims, dims)
        self.linear_k_v = nn.Linear(memory_dims or dims, 2 * dims)
        self.linear_out = nn.Linear(dims, dims)

    def __call__(self, x: mx.array, memory: mx.array) -> mx.array:
        b, n, _ = x.shape
        h, d = self.heads, self.dims // self.heads
        q = self.linear_q(x).reshape(b, n, h, d).transpose(0, 2, 1, 3)
        k, v = mx.split(self.linear_k_v(memory), 2, axis=-1)
        k, v = (a.reshape(b, -1, h, d).transpose(0, 2, 1, 3) for a in (k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=d ** -0.5)
        return self.linear_out(out.transpose(0, 2, 1, 3).reshape(b, n, self.dims))


class DecoderFeedForward(FeedForward):
    """PositionwiseFeedForwardDecoderSANM: w_2(norm(relu(w_1(x)))), w_2 without bias."""

    def __init__(self, dims: int, hidden: int):
        super().__init__(dims, hidden)
        self.w_2 = nn.Linear(hidden, dims, bias=False)
        self.norm = layer_norm(hidden)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w_2(self.norm(nn.relu(self.w_1(x))))


class DecoderLayerSANM(nn.Module):
    def __init__(self, dims: int, hidden: int, heads: int | None, kernel: int | None, shift: int = 0):
        super().__init__()
        self.feed_forward = DecoderFeedForward(dims, hidden)
        self.norm1 = layer_norm(dims)
        if kernel is not None:
            self.self_attn = DecoderSelfAttention(dims, kernel, shift)
            self.norm2 = layer_norm(dims)
        if heads is not None:
            self.src_attn = CrossAttention(heads, dims)
            self.norm3 = layer_norm(dims)

    def __call__(self, x: mx.array, memory: mx.array) -> mx.array:
        out = self.feed_forward(self.norm1(x))
        if "self_attn" in self:  # the last layer (decoders3) is a bare feed-forward, no residual
            out = x + self.self_attn(self.norm2(out))
        if "src_attn" in self:
            out = out + self.src_attn(self.norm3(out), memory)
        return out


class ParaformerSANMDecoder(nn.Module):
    def __init__(self, vocab_size: int, dims: int, conf: dict):
        super().__init__()
        heads, hidden = int(conf.get("attention_heads", 4)), int(conf.get("linear_units", 2048))
        blocks = int(conf.get("num_blocks", 6))
        attn_layers = int(conf.get("att_layer_num", 6))  # FunASR's default, whatever num_blocks is
        kernel = int(conf.get("kernel_size", 21))
        shift = conf.get("sanm_shfit", 0)
        shift = (kernel - 1) // 2 if shift is None else int(shift)
        self.decoders = [DecoderLayerSANM(dims, hidden, heads, kernel, shift) for _ in range(attn_layers)]
        if blocks > attn_layers:
            self.decoders2 = [DecoderLayerSANM(dims, hidden, None, kernel, 0) for _ in range(blocks - attn_layers)]
        self.decoders3 = [DecoderLayerSANM(dims, hidden, None, None)]
        self.after_norm = layer_norm(dims)
        if conf.get("use_output_layer", True):
            self.output_layer = nn.Linear(dims, vocab_size)

    def __call__(self, embeds: mx.array, memory: mx.array, hidden: bool = False) -> mx.array:
        x = embeds
        for layer in self.decoders + self.get("decoders2", []) + self.decoders3:
            x = layer(x, memory)
        x = self.after_norm(x)
        return x if hidden or "output_layer" not in self else self.output_layer(x)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.encoder = SANMEncoder(args.input_size, args.encoder_conf)
        self.predictor = CifPredictorV2(args.predictor_conf)
        self.decoder = ParaformerSANMDecoder(args.vocab_size, self.encoder.dims, args.decoder_conf)

    def encode(self, feats: mx.array) -> mx.array:
        return self.encoder(feats)

    def predict(self, encoder_out: mx.array) -> CifResult:
        alphas = self.predictor(encoder_out)
        return integrate_and_fire(np.array(alphas[0].astype(mx.float32)), encoder_out.shape[1],
                                  self.predictor.tail_threshold)

    def decode(self, encoder_out: mx.array, cif: CifResult) -> mx.array:
        """Decoder logits (1, tokens, vocab) for the CIF acoustic embeddings."""
        weights = mx.array(cif.weights).astype(encoder_out.dtype)
        embeds = (weights @ encoder_out[0])[None]
        return self.decoder(embeds, encoder_out)

    def __call__(self, feats: mx.array) -> tuple[mx.array, CifResult]:
        encoder_out = self.encode(feats)
        cif = self.predict(encoder_out)
        if cif.token_num < 1:
            return mx.zeros((1, 0, self.args.vocab_size)), cif
        return self.decode(encoder_out, cif), cif


# Tensors that only training uses: the decoder's token embedding (teacher forcing), CTC head.
_TRAINING_ONLY = ("decoder.embed.", "ctc.", "criterion_att.", "criterion_pre.")


def sanitize(weights: dict) -> dict:
    return {k: v for k, v in weights.items()
            if not k.startswith(_TRAINING_ONLY) and not k.endswith("num_batches_tracked")}
