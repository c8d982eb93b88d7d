"""The architecture table: config.json `model_type` -> module under ominix.models.

This is the only place that lists architectures. Each module exposes `ModelArgs` (built from
config.json with `ModelArgs.from_dict`) and `Model`; it may expose `sanitize(weights)`.
Other packages add architectures through the `ominix.architectures` entry-point group.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType

ARCHITECTURES: dict[str, str] = {
    "qwen3": "ominix.models.qwen3",
    "qwen2": "ominix.models.qwen2",
    "bert": "ominix.models.bert",
    "llama": "ominix.models.llama",
    "mistral": "ominix.models.mistral",
    "glm4": "ominix.models.glm4",
    "glm": "ominix.models.glm4",
    "chatglm": "ominix.models.glm4",
    "minicpm": "ominix.models.minicpm",
    "minicpm_sala": "ominix.models.minicpm",
    "qwen3_moe": "ominix.models.qwen3_moe",
    "qwen3_tts": "ominix.models.qwen3_tts",
    # GPT-SoVITS v2 (the catalog's `gpt_sovits`): a folder of three converted parts loaded by
    # ominix/engine/audio/gpt_sovits_tts.py, each with its own model_type
    "gpt_sovits": "ominix.models.gpt_sovits",
    "gpt_sovits_gpt": "ominix.models.gpt_sovits",
    "gpt_sovits_sovits": "ominix.models.sovits",
    "hubert": "ominix.models.cnhubert",
    "mixtral": "ominix.models.mixtral",
    "glm4_moe": "ominix.models.glm4_moe",
    "whisper": "ominix.models.whisper",
    # speech recognition (FunASR layout: config.yaml + model.pt, see ominix/engine/audio/funasr.py)
    "paraformer": "ominix.models.paraformer",
    "seaco_paraformer": "ominix.models.seaco_paraformer",
    "sensevoice": "ominix.models.sensevoice",
    "qwen3_asr": "ominix.models.qwen3_asr",
    "fun_asr_nano": "ominix.models.fun_asr_nano",
    "qwen3_vl": "ominix.models.qwen3_vl",
    "moxin_vlm": "ominix.models.moxin_vlm",
    "prismatic": "ominix.models.moxin_vlm",
    # image transformers (diffusers layout: recognised by model_index.json, see ominix/kinds.py)
    "flux2": "ominix.models.flux2",
    "zimage": "ominix.models.zimage",
}


def _plugin_architectures() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="ominix.architectures")}


def supported_model_types() -> list[str]:
    return sorted({**ARCHITECTURES, **_plugin_architectures()})


def can_run(entry) -> bool:
    """Whether this build has the module for a catalog entry's `architecture` (imports no MLX)."""
    architecture = getattr(entry, "architecture", None)
    return bool(architecture) and architecture in {**ARCHITECTURES, **_plugin_architectures()}


def get_architecture(model_type: str) -> ModuleType:
    table = {**ARCHITECTURES, **_plugin_architectures()}
    if model_type not in table:
        raise ValueError(
            f"model_type '{model_type}' is not supported; supported: {', '.join(sorted(table))}"
        )
    return importlib.import_module(table[model_type])
