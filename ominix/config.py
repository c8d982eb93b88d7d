"""Paths and defaults. Everything here reads the environment at call time so tests can redirect it."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # the port OminiX Studio expects


def ominix_home() -> Path:
    """Root of OminiX's own state: user registry overlay, non-HF model store, logs."""
    return Path(os.environ.get("OMINIX_HOME", "~/.ominix")).expanduser()


def models_dir() -> Path:
    """Where models that do not come from the Hugging Face hub live (ModelScope, URL, manual)."""
    return Path(os.environ.get("OMINIX_MODELS", ominix_home() / "models")).expanduser()


def hf_hub_cache() -> Path:
    """The shared Hugging Face cache (models--owner--repo), honouring HF_HUB_CACHE and HF_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


def user_registry_path() -> Path:
    """The user's overlay catalog: OMINIX_REGISTRY, else ~/.ominix/models_registry.json."""
    if os.environ.get("OMINIX_REGISTRY"):
        return Path(os.environ["OMINIX_REGISTRY"]).expanduser()
    return ominix_home() / "models_registry.json"
