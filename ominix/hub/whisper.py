"""The tokenizer an mlx-whisper checkpoint does not carry.

mlx-community's Whisper repositories (mlx-whisper's layout) hold config.json and weights only:
mlx-whisper ships the vocabulary inside its own package. OminiX takes the tokenizer.json of the
matching openai/whisper-* repository instead (same vocabulary): `ominix pull` fetches that one file
right after the weights, into the Hugging Face cache, and the loader finds it there. Imports no MLX.
"""

from __future__ import annotations

import json
from pathlib import Path

# n_vocab -> a repository whose tokenizer.json has exactly that vocabulary
TOKENIZER_REPOS = {
    51864: "openai/whisper-tiny.en",  # English-only models (GPT-2 vocabulary)
    51865: "openai/whisper-tiny",  # multilingual up to large-v2 (99 languages)
    51866: "openai/whisper-large-v3",  # large-v3 and -turbo (adds <|yue|>)
}


def _config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def needs_tokenizer(path: Path) -> str | None:
    """The openai repo to take tokenizer.json from, for an mlx-whisper checkpoint without one."""
    path = Path(path)
    config = _config(path)
    if "n_audio_state" not in config or (path / "tokenizer.json").is_file():
        return None
    return TOKENIZER_REPOS.get(int(config.get("n_vocab", 0)))


def find_tokenizer(path: Path) -> Path | None:
    """tokenizer.json next to the weights, else the matching openai repo's in the HF cache."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    repo = needs_tokenizer(path)
    if repo is None:
        return None
    from ominix.hub.store import StoreError, model_dir
    from ominix.registry import RegistryError

    try:
        found = model_dir(repo)
    except (RegistryError, StoreError):
        return None
    return found / "tokenizer.json" if found and (found / "tokenizer.json").is_file() else None


def ensure_tokenizer(path: Path, on_event=None) -> Path | None:
    """Pull the tokenizer an mlx-whisper checkpoint lacks (one small file); None if none needed."""
    repo = needs_tokenizer(path)
    if repo is None or find_tokenizer(path) is not None:
        return find_tokenizer(path) if repo else None
    from ominix.hub.download import pull

    return pull(repo, include=["tokenizer.json"], on_event=on_event) / "tokenizer.json"
