"""SeACo-Paraformer (FunASR's hotword-customisable Paraformer-large) and its CifPredictorV3.

On top of Paraformer: hotwords are embedded with the decoder's token embedding and a 2-layer
LSTM (`bias_encoder`, last step of each word); a small SAN-M decoder (`seaco_decoder`) attends from
the CIF embeddings and from the main decoder's hidden states to those hotword vectors, and
`hotword_output_layer` scores the result. Where that head does not answer NO_BIAS, its
log-probabilities replace the decoder's. The list always ends with a "no bias" entry (<s>).
CifPredictorV3 adds an upsampled (x3) CIF branch (transposed conv + BLSTM) used for timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ominix.models import paraformer
from ominix.models.paraformer import CifPredictorV2, ParaformerSANMDecoder, SANMEncoder


class LSTM(nn.Module):
    """torch.nn.LSTM (batch_first) with its parameter names; gates in torch's order i, f, g, o."""

    def __init__(self, in_dims: int, hidden: int, layers: int = 1, bidirectional: bool = False):
        super().__init__()
        self.hidden, self.layers, self.bidirectional = hidden, layers, bidirectional
        for layer in range(layers):
            width = in_dims if layer == 0 else hidden * (2 if bidirectional else 1)
            for suffix in ([""] + (["_reverse"] if bidirectional else [])):
                setattr(self, f"weight_ih_l{layer}{suffix}", mx.zeros((4 * hidden, width)))
                setattr(self, f"weight_hh_l{layer}{suffix}", mx.zeros((4 * hidden, hidden)))
                setattr(self, f"bias_ih_l{layer}{suffix}", mx.zeros((4 * hidden,)))
                setattr(self, f"bias_hh_l{layer}{suffix}", mx.zeros((4 * hidden,)))

    def _direction(self, x: mx.array, name: str, reverse: bool) -> mx.array:
        # the input projection for all steps at once; only h @ W_hh is sequential
        gates_x = x @ self[f"weight_ih_{name}"].T + self[f"bias_ih_{name}"] + self[f"bias_hh_{name}"]
        w_hh = self[f"weight_hh_{name}"].T
        b, t, _ = x.shape
        h = mx.zeros((b, self.hidden), dtype=x.dtype)
        c = mx.zeros((b, self.hidden), dtype=x.dtype)
        outputs = [None] * t
        for step in (range(t - 1, -1, -1) if reverse else range(t)):
            i, f, g, o = mx.split(gates_x[:, step] + h @ w_hh, 4, axis=-1)
            c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
            h = mx.sigmoid(o) * mx.tanh(c)
            outputs[step] = h
        return mx.stack(outputs, axis=1)

    def __call__(self, x: mx.array) -> mx.array:
        for layer in range(self.layers):
            forward = self._direction(x, f"l{layer}", False)
            if self.bidirectional:
                x = mx.concatenate([forward, self._direction(x, f"l{layer}_reverse", True)], axis=-1)
            else:
                x = forward
        return x


class ConvTranspose1d(nn.Module):
    """torch ConvTranspose1d with kernel == stride (no overlap): each frame becomes `kernel` frames."""

    def __init__(self, in_dims: int, out_dims: int, kernel: int):
        super().__init__()
        self.weight = mx.zeros((in_dims, out_dims, kernel))
        self.bias = mx.zeros((out_dims,))

    def __call__(self, x: mx.array) -> mx.array:
        b, t, _ = x.shape
        c_in, c_out, k = self.weight.shape
        y = x @ self.weight.reshape(c_in, c_out * k)  # (B, T, C_out * K)
        y = y.reshape(b, t, c_out, k).transpose(0, 1, 3, 2).reshape(b, t * k, c_out)
        return y + self.bias


class CifPredictorV3(CifPredictorV2):
    def __init__(self, conf: dict):
        super().__init__(conf)
        idim = int(conf.get("idim", 512))
        self.upsample_times = int(conf.get("upsample_times", 5))
        self.upsample_type = conf.get("upsample_type", "cnn")
        self.use_cif1_cnn = bool(conf.get("use_cif1_cnn", True))
        self.smooth_factor2 = float(conf.get("smooth_factor2", 1.0))
        self.noise_threshold2 = float(conf.get("noise_threshold2", 0.0))
        if self.upsample_type not in ("cnn", "cnn_blstm"):
            raise ValueError(f"CifPredictorV3 upsample_type '{self.upsample_type}' is not supported")
        self.upsample_cnn = ConvTranspose1d(idim, idim, self.upsample_times)
        if self.upsample_type == "cnn_blstm":
            self.blstm = LSTM(idim, idim, 1, bidirectional=True)
        self.cif_output2 = nn.Linear(idim * (2 if self.upsample_type == "cnn_blstm" else 1), 1)

    def upsampled_alphas(self, hidden: mx.array, token_num: int) -> mx.array:
        """The x`upsample_times` alphas, scaled to sum to token_num (get_upsample_timestamp)."""
        source = nn.relu(self.cif_conv1d(hidden, self.l_order, self.r_order)) if self.use_cif1_cnn else hidden
        x = self.upsample_cnn(source)
        if "blstm" in self:
            x = self.blstm(x)
        alphas = nn.relu(mx.sigmoid(self.cif_output2(x))[..., 0] * self.smooth_factor2 - self.noise_threshold2)
        return alphas * (token_num / alphas.sum(axis=-1, keepdims=True))


@dataclass
class ModelArgs(paraformer.ModelArgs):
    inner_dim: int = 256
    seaco_decoder_conf: dict | None = None
    no_bias: int = 8377

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        base = paraformer.ModelArgs.from_dict(config)
        conf = {**config, **(config.get("model_conf") or {})}
        if conf.get("bias_encoder_type", "lstm") != "lstm" or conf.get("bias_encoder_bid", False):
            raise ValueError("SeACo-Paraformer: only the unidirectional LSTM bias encoder is supported")
        return cls(**base.__dict__, inner_dim=int(conf.get("inner_dim", 256)),
                   seaco_decoder_conf=dict(config.get("seaco_decoder_conf") or {}),
                   no_bias=int(conf.get("NO_BIAS", 8377)))


class Model(paraformer.Model):
    def __init__(self, args: ModelArgs):
        nn.Module.__init__(self)
        self.args = args
        self.encoder = SANMEncoder(args.input_size, args.encoder_conf)
        predictor = args.predictor_conf
        self.predictor = CifPredictorV3(predictor) if "upsample_times" in predictor or "smooth_factor2" in predictor \
            else CifPredictorV2(predictor)
        self.decoder = ParaformerSANMDecoder(args.vocab_size, self.encoder.dims, args.decoder_conf)
        self.decoder.embed = [nn.Embedding(args.vocab_size, self.encoder.dims)]  # torch: embed.0.weight
        self.bias_encoder = LSTM(args.inner_dim, args.inner_dim, 2)
        self.seaco_decoder = ParaformerSANMDecoder(args.vocab_size, args.inner_dim, args.seaco_decoder_conf)
        self.hotword_output_layer = nn.Linear(args.inner_dim, args.vocab_size)

    def hotword_vectors(self, hotwords: list[list[int]]) -> mx.array:
        """(1, words, inner_dim): each word's last LSTM output over its token embeddings."""
        rows = [self.bias_encoder(self.decoder.embed[0](mx.array(ids)[None]))[:, -1] for ids in hotwords]
        return mx.concatenate(rows, axis=0)[None]

    def decode_with_hotwords(self, encoder_out: mx.array, cif, hotwords: list[list[int]] | None) -> mx.array:
        """Log-probabilities (1, tokens, vocab) after SeACo's hotword bias (none: the decoder's)."""
        weights = mx.array(cif.weights).astype(encoder_out.dtype)
        embeds = (weights @ encoder_out[0])[None]
        hidden = self.decoder(embeds, encoder_out, hidden=True)
        logprobs = nn.log_softmax(self.decoder.output_layer(hidden), axis=-1)
        if not hotwords:
            return logprobs
        context = self.hotword_vectors(hotwords)
        merged = self.seaco_decoder(embeds, context) + self.seaco_decoder(hidden, context)
        hot = nn.log_softmax(self.hotword_output_layer(merged), axis=-1)
        keep_decoder = (mx.argmax(hot, axis=-1) == self.args.no_bias)[..., None]
        return mx.where(keep_decoder, logprobs, hot)

    def sanitize(self, weights: dict) -> dict:
        return {k: v for k, v in weights.items()
                if not k.startswith(("ctc.", "criterion_att.", "criterion_pre.", "criterion_seaco."))}
