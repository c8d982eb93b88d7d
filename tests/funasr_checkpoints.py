"""Tiny random FunASR checkpoints in the ModelScope layout (config.yaml, am.mvn, tokens.json,
model.pt), built with funasr itself so the tensor names and config keys are the published ones.

funasr and torch are imported inside the functions: they are references for tests only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000

# A vocabulary like Paraformer-large's: specials first, Chinese characters, English words and
# BPE pieces ("@@" glues to the next piece), single letters for abbreviations, <unk> last.
PARAFORMER_TOKENS = (["<blank>", "<s>", "</s>"]
                     + list("你好世界我们今天气很不错中国人民")
                     + ["hello", "world", "good", "morn@@", "ing", "the", "a", "b", "c", "x", "0", "12",
                        "ok@@", "ay", "it's"]
                     + ["<unk>"])

FRONTEND_CONF = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                 "lfr_m": 7, "lfr_n": 6, "dither": 0.0}


def paraformer_config(*, dims: int = 32, enc_blocks: int = 3, dec_blocks: int = 3, att_layers: int = 2) -> dict:
    """The config.yaml keys of iic/speech_paraformer-large (encoder/decoder/predictor/frontend),
    shrunk; att_layer_num < num_blocks so the decoders2 stack is exercised too."""
    return {
        "model": "Paraformer",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
                       "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoder",
        "encoder_conf": {"output_size": dims, "attention_heads": 4, "linear_units": 2 * dims,
                         "num_blocks": enc_blocks, "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
                         "attention_dropout_rate": 0.1, "input_layer": "pe",
                         "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                         "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm"},
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {"attention_heads": 4, "linear_units": 2 * dims, "num_blocks": dec_blocks,
                         "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
                         "self_attention_dropout_rate": 0.1, "src_attention_dropout_rate": 0.1,
                         "att_layer_num": att_layers, "kernel_size": 11, "sanm_shfit": 0},
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": dims, "threshold": 1.0, "l_order": 1, "r_order": 1,
                           "tail_threshold": 0.45},
        "frontend": "WavFrontend",
        "frontend_conf": dict(FRONTEND_CONF),
        "specaug": "SpecAugLFR",
        "specaug_conf": {"apply_time_warp": False, "apply_freq_mask": True, "freq_mask_width_range": [0, 30],
                         "lfr_rate": 6, "num_freq_mask": 1, "apply_time_mask": True,
                         "time_mask_width_range": [0, 12], "num_time_mask": 1},
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "normalize": None,
    }


def write_am_mvn(path: Path, dim: int, seed: int = 0) -> None:
    """A Kaldi nnet text CMVN exactly as FunASR ships it (<AddShift> then <Rescale>)."""
    rng = np.random.default_rng(seed)
    shift = -(10 + 3 * rng.random(dim))
    scale = 0.2 + 0.2 * rng.random(dim)
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    path.write_text(
        "<Nnet>\n<Splice> {0} {0}\n[ 0 ]\n<AddShift> {0} {0}\n<LearnRateCoef> 0 [ {1} ]\n"
        "<Rescale> {0} {0}\n<LearnRateCoef> 0 [ {2} ]\n</Nnet>\n".format(dim, fmt(shift), fmt(scale)),
        encoding="utf-8")


def randomize(model, seed: int, scale: float = 0.5) -> None:
    """Every tensor random (norm weights around 1) so no bug hides behind a constant init."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise * scale / max(1.0, p.shape[-1] ** 0.5))


def build_paraformer(out: Path, *, seed: int = 0, **shape) -> Path:
    """A tiny random Paraformer saved like ModelScope's repo; returns the directory."""
    import torch
    import yaml
    from funasr.models.paraformer.model import Paraformer

    out.mkdir(parents=True, exist_ok=True)
    config = paraformer_config(**shape)
    torch.manual_seed(seed)
    model = Paraformer(encoder=config["encoder"], encoder_conf=config["encoder_conf"],
                       decoder=config["decoder"], decoder_conf=config["decoder_conf"],
                       predictor=config["predictor"], predictor_conf=config["predictor_conf"],
                       input_size=560, vocab_size=len(PARAFORMER_TOKENS), **config["model_conf"])
    randomize(model, seed)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (out / "tokens.json").write_text(json.dumps(PARAFORMER_TOKENS, ensure_ascii=False), encoding="utf-8")
    write_am_mvn(out / "am.mvn", 560, seed)
    (out / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"token_list": "tokens.json"},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}), encoding="utf-8")
    return out


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic voiced-sounding audio: harmonics with a moving pitch, syllable envelope, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    audio = 0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


SENSEVOICE_TAGS = ["<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>", "<|HAPPY|>", "<|SAD|>",
                   "<|ANGRY|>", "<|NEUTRAL|>", "<|EMO_UNKNOWN|>", "<|Speech|>", "<|BGM|>", "<|Laughter|>",
                   "<|withitn|>", "<|woitn|>"]
SENSEVOICE_BPE = "chn_jpn_yue_eng_ko_spectok.bpe.model"
_CORPUS = ["hello world this is a test of the speech model", "good morning everyone how are you today",
           "你好世界今天天气很不错我们一起去公园", "中国人民欢迎你", "the quick brown fox jumps over the lazy dog",
           "こんにちは世界", "안녕하세요 여러분", "speech recognition with sense voice small"]


def train_sentencepiece(path: Path, vocab_size: int = 420) -> Path:
    """A tiny BPE SentencePiece model with SenseVoice's tags as user-defined pieces, byte fallback."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_CORPUS * 20), model_writer=buffer,
                                   vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
                                   user_defined_symbols=SENSEVOICE_TAGS, character_coverage=1.0,
                                   minloglevel=2)
    path.write_bytes(buffer.getvalue())
    return path


def sensevoice_config(*, dims: int = 32, blocks: int = 3, tp_blocks: int = 2) -> dict:
    """FunAudioLLM/SenseVoiceSmall's config.yaml keys, shrunk (the real one: 512 wide, 50 + 20 blocks)."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {"output_size": dims, "attention_heads": 4, "linear_units": 2 * dims,
                         "num_blocks": blocks, "tp_blocks": tp_blocks, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
                         "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                         "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm"},
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {**FRONTEND_CONF, "cmvn_file": None},
        "dataset": "SenseVoiceCTCDataset",
        "specaug": "SpecAugLFR",
        "specaug_conf": {"apply_time_warp": False, "apply_freq_mask": True, "freq_mask_width_range": [0, 30],
                         "lfr_rate": 6, "num_freq_mask": 1, "apply_time_mask": True,
                         "time_mask_width_range": [0, 12], "num_time_mask": 1},
    }


def build_sensevoice(out: Path, *, seed: int = 0, **shape) -> Path:
    """A tiny random SenseVoiceSmall laid out like FunAudioLLM/SenseVoiceSmall."""
    import sentencepiece as spm
    import torch
    import yaml
    from funasr.models.sense_voice.model import SenseVoiceSmall

    out.mkdir(parents=True, exist_ok=True)
    bpe = train_sentencepiece(out / SENSEVOICE_BPE)
    vocab = spm.SentencePieceProcessor(model_file=str(bpe)).get_piece_size()
    config = sensevoice_config(**shape)
    torch.manual_seed(seed)
    model = SenseVoiceSmall(encoder=config["encoder"], encoder_conf=config["encoder_conf"], input_size=560,
                            vocab_size=vocab, **config["model_conf"])
    randomize(model, seed)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    write_am_mvn(out / "am.mvn", 560, seed)
    (out / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "model": {"type": "funasr"}, "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"bpemodel": SENSEVOICE_BPE},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}), encoding="utf-8")
    return out


SEACO_NO_BIAS = 9  # the token the hotword head answers for "no hotword here" (8377 in the real vocab)


def seaco_config(*, dims: int = 32) -> dict:
    """iic/speech_seaco_paraformer_large...-pytorch's config.yaml keys, shrunk: Paraformer plus the
    LSTM bias encoder, a 4-block SAN-M seaco_decoder without input/output layers, CifPredictorV3
    with the x3 CNN+BLSTM timestamp branch."""
    config = paraformer_config(dims=dims, att_layers=3)
    config["model"] = "SeacoParaformer"
    config["model_conf"].update({"inner_dim": dims, "bias_encoder_type": "lstm", "bias_encoder_bid": False,
                                 "seaco_lsm_weight": 0.1, "seaco_length_normalized_loss": True,
                                 "train_decoder": True, "NO_BIAS": SEACO_NO_BIAS})
    config["seaco_decoder"] = "ParaformerSANMDecoder"
    config["seaco_decoder_conf"] = {"attention_heads": 4, "linear_units": dims, "num_blocks": 4,
                                    "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
                                    "self_attention_dropout_rate": 0.1, "src_attention_dropout_rate": 0.1,
                                    "kernel_size": 21, "sanm_shfit": 0, "use_output_layer": False,
                                    "wo_input_layer": True}
    config["predictor"] = "CifPredictorV3"
    config["predictor_conf"] = {"idim": dims, "threshold": 1.0, "l_order": 1, "r_order": 1,
                                "tail_threshold": 0.45, "smooth_factor2": 0.25, "noise_threshold2": 0.01,
                                "upsample_times": 3, "use_cif1_cnn": False, "upsample_type": "cnn_blstm"}
    config["decoder_conf"]["att_layer_num"] = 3
    return config


def build_seaco(out: Path, *, seed: int = 0, no_bias_boost: float = 2.0) -> Path:
    """A tiny random SeACo-Paraformer in the ModelScope layout, with a seg_dict. The hotword head's
    NO_BIAS logit is raised a little so that both its answers (bias / no bias) occur."""
    import torch
    import yaml
    from funasr.models.seaco_paraformer.model import SeacoParaformer

    out.mkdir(parents=True, exist_ok=True)
    config = seaco_config()
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in config.items() if k not in ("model", "model_conf", "frontend", "frontend_conf",
                                                           "tokenizer", "tokenizer_conf")}
    model = SeacoParaformer(**kwargs, **config["model_conf"], input_size=560, vocab_size=len(PARAFORMER_TOKENS))
    randomize(model, seed)
    with torch.no_grad():
        model.hotword_output_layer.bias[SEACO_NO_BIAS] += no_bias_boost
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (out / "tokens.json").write_text(json.dumps(PARAFORMER_TOKENS, ensure_ascii=False), encoding="utf-8")
    write_am_mvn(out / "am.mvn", 560, seed)
    chars = [t for t in PARAFORMER_TOKENS if len(t) == 1 and t >= "\u4e00"]
    lines = [f"{c} {c}" for c in chars] + ["morning morn@@ ing", "okay ok@@ ay", "hello hello", "world world"]
    (out / "seg_dict").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}), encoding="utf-8")
    return out
