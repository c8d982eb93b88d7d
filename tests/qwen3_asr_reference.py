"""Runs inside the qwen-asr 0.0.6 reference venv (see tests/qwen3_asr_original.py), not under pytest.

    python qwen3_asr_reference.py spec.json

Builds a tiny random Qwen3-ASR with qwen-asr's own classes (Qwen3ASRForConditionalGeneration,
`thinker.*` tensors), saves it with `save_pretrained`, rewrites config.json in the spelling Qwen
publishes (thinker_config with M-RoPE `rope_scaling`), loads it back through
`Qwen3ASRModel.from_pretrained` (the path a download takes) and records, per request: the
processor's prompt ids and features, the audio encoder's output, the prompt logits, the greedy
tokens and what `transcribe()` returns (language, text).
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path


def _stub(name: str) -> None:
    # the forced aligner (imported by qwen_asr/__init__) needs nagisa (DyNet) and soynlp for
    # Japanese / Korean word splitting only; these requests never align.
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = module


for _name in ("nagisa", "soynlp", "soynlp.tokenizer"):
    _stub(_name)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from qwen_asr import Qwen3ASRModel  # noqa: E402
from qwen_asr.core.transformers_backend import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration  # noqa: E402
# run as a script: tests/ is on sys.path, and funasr_checkpoints needs only numpy at import
from funasr_checkpoints import randomize  # noqa: E402


def windowed_attention(encoder) -> None:
    """Give the audio encoder's layers the block mask of their attention windows.

    qwen-asr hands `cu_seqlens` (the windows of n_window_infer frames) to flash-attention only; on
    the sdpa / eager path it passes no mask, so on a CPU every frame attends to every other. The
    FA2 path, which Qwen runs, attends inside each window; `_prepare_attention_mask`, qwen-asr's own
    helper, builds that exact block mask for sdpa."""
    for layer in encoder.layers:
        forward = layer.forward

        def masked(hidden_states, cu_seqlens, attention_mask=None, _forward=forward, **kwargs):
            mask = encoder._prepare_attention_mask(hidden_states, cu_seqlens)
            return _forward(hidden_states, cu_seqlens, attention_mask=mask, **kwargs)

        layer.forward = masked


def build(spec: dict) -> Path:
    out = Path(spec["checkpoint"])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = Qwen3ASRForConditionalGeneration(Qwen3ASRConfig(**spec["config"]))
    randomize(model, spec["seed"], spec["scale"])
    model.save_pretrained(out, safe_serialization=True)
    (out / "config.json").write_text(json.dumps(spec["config"], indent=2))  # Qwen's published spelling
    for name, text in spec["files"].items():
        (out / name).write_text(text)
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    ckpt = build(spec)
    asr = Qwen3ASRModel.from_pretrained(str(ckpt), dtype=torch.float32, max_new_tokens=spec["max_new_tokens"])
    thinker = asr.model.thinker
    windowed_attention(thinker.audio_tower)
    # generate() hard-codes the real vocabulary's <|im_end|> / <|endoftext|> ids (151645, 151643):
    # point it at the tiny tokenizer's, so transcribe() stops where the real model would.
    generate = asr.model.generate
    asr.model.generate = lambda *a, **kw: generate(*a, **{"eos_token_id": spec["eos_token_ids"], **kw})
    results: dict[str, np.ndarray] = {}
    texts = []
    for i, case in enumerate(spec["cases"]):
        wav = np.load(case["audio"]).astype(np.float32)
        language, context = case.get("language"), case.get("context") or ""
        prompt = asr._build_text_prompt(context=context, force_language=language)
        inputs = asr.processor(text=[prompt], audio=[wav], return_tensors="pt", padding=True)
        with torch.no_grad():
            audio = thinker.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
            logits = thinker(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             input_features=inputs["input_features"],
                             feature_attention_mask=inputs["feature_attention_mask"]).logits
            generated = asr.model.generate(**inputs, max_new_tokens=spec["max_new_tokens"])
        tokens = generated.sequences[0, inputs["input_ids"].shape[1]:]
        out = asr.transcribe(audio=(wav, 16000), context=context, language=language)[0]
        results[f"{i}.input_ids"] = inputs["input_ids"][0].numpy()
        results[f"{i}.features"] = inputs["input_features"][0].numpy()
        results[f"{i}.feature_frames"] = inputs["feature_attention_mask"][0].sum().numpy()
        results[f"{i}.audio"] = audio.numpy()
        results[f"{i}.logits"] = logits[0].numpy()
        results[f"{i}.tokens"] = tokens.numpy()
        texts.append({"language": out.language, "text": out.text,
                      "raw": asr.processor.batch_decode(tokens[None], skip_special_tokens=True,
                                                        clean_up_tokenization_spaces=False)[0]})
    np.savez(spec["results"], **results)
    Path(spec["texts"]).write_text(json.dumps(texts, ensure_ascii=False))


if __name__ == "__main__":
    main()
