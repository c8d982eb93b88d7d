"""Resident models: resolve a requested name to files, load once, keep it, report what is loaded.

Two sides with two rules:
- `resolve()`, `available()` and `resident()` touch no MLX; HTTP handlers call them to answer 404s
  and /v1/models without waiting for the inference thread.
- `get()` loads (builds MLX arrays) and must only run on the inference thread (engine/scheduler.py).

Names resolve in this order: models registered at start (`--model`), catalog ids and aliases that are
installed (registry + hub/store), then a local checkpoint directory. This simple version keeps every
loaded model; `max_resident` bounds the count with least-recently-used eviction. A memory budget and
per-model keep_alive slot into `_make_room()` later.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path


class ModelNotFoundError(LookupError):
    """No model answers to this name; `available` lists the ids that do."""

    def __init__(self, message: str, available: list[str]):
        super().__init__(message)
        self.available = available


class ModelLoadError(RuntimeError):
    """The model exists but cannot be loaded (message says why)."""


@dataclass(frozen=True)
class ModelRef:
    id: str
    path: Path
    entry: object | None = None  # registry.ModelEntry when the model is in the catalog

    @property
    def kind(self) -> str:
        return model_kind(self.path, self.entry)


@dataclass
class Resident:
    """A loaded model: `model` is the MLX module for chat, an engine.embed.Embedder for embeddings."""

    ref: ModelRef
    kind: str  # "chat" or "embedding"
    model: object
    tokenizer: object
    nbytes: int
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.ref.id

    @property
    def context_length(self) -> int | None:
        args = getattr(self.model, "args", None)
        for key in ("max_position_embeddings", "max_seq_len", "seq_length"):
            value = getattr(args, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None


EMBEDDING_ARCHITECTURES = ("BertModel", "Qwen3Model")


def model_kind(path: Path, entry=None) -> str:
    """'embedding' for sentence-embedding checkpoints, the catalog category for speech and image
    models, else 'chat'. Reads only small JSON files."""
    category = getattr(entry, "category", None)
    if category == "embedding":
        return "embedding"
    if category in ("asr", "tts", "image_gen"):
        return category  # served by their own routes, never by chat or embeddings
    if (path / "modules.json").is_file():  # sentence-transformers layout
        return "embedding"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "chat"
    archs = config.get("architectures") or []
    if config.get("model_type") == "bert" or any(a in EMBEDDING_ARCHITECTURES for a in archs):
        return "embedding"
    return "chat"


class ModelPool:
    def __init__(self, max_resident: int | None = None, use_catalog: bool = True):
        self.max_resident = max_resident
        self.use_catalog = use_catalog
        self._registered: dict[str, ModelRef] = {}
        self._resident: OrderedDict[str, Resident] = OrderedDict()
        self._lock = threading.Lock()  # guards the two dicts; loading itself is single-threaded

    # ---- naming (any thread, no MLX) -------------------------------------------------------

    def register(self, name: str, model_id: str | None = None) -> ModelRef:
        """Make `name` (catalog id, alias or checkpoint directory) servable under `model_id`."""
        ref = self.resolve(name)
        if model_id and model_id != ref.id:
            ref = ModelRef(model_id, ref.path, ref.entry)
        with self._lock:
            self._registered[ref.id] = ref
        return ref

    def resolve(self, name: str) -> ModelRef:
        with self._lock:
            if name in self._registered:
                return self._registered[name]
        if self.use_catalog:
            ref = self._resolve_catalog(name)
            if ref is not None:
                return ref
        path = Path(name).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return ModelRef(name, path.resolve())
        ids = [r.id for r in self.available()]
        shown = ", ".join(ids) if ids else "none installed (run `ominix pull <id>`)"
        raise ModelNotFoundError(f"The model '{name}' does not exist. Available models: {shown}", ids)

    def _resolve_catalog(self, name: str) -> ModelRef | None:
        """Catalog ids and aliases, `owner/repo` in the HF cache, store folders (hub/store rules)."""
        from ominix import registry
        from ominix.hub import store

        try:
            catalog = registry.load_catalog()
            path = store.model_dir(name, catalog)
        except (registry.RegistryError, store.StoreError):
            return None  # unknown to the catalog and the store; maybe a plain directory
        entry = catalog.find(name)
        if path is None:
            if entry is None:
                return None
            ids = [r.id for r in self.available()]
            raise ModelNotFoundError(
                f"The model '{name}' is in the catalog but not installed: run `ominix pull {entry.id}`",
                ids,
            )
        if not (Path(path) / "config.json").is_file() and entry is None:
            return None
        return ModelRef(entry.id if entry else name, Path(path), entry)

    def available(self) -> list[ModelRef]:
        """Registered models, then installed catalog models (no duplicates)."""
        with self._lock:
            refs = dict(self._registered)
        if self.use_catalog:
            try:
                from ominix.hub import store

                for m in store.list_installed():
                    refs.setdefault(m.id, ModelRef(m.id, Path(m.path), getattr(m, "entry", None)))
            except Exception:  # a broken store must not take the model list down with it
                pass
        return list(refs.values())

    def resident(self) -> dict[str, Resident]:
        with self._lock:
            return dict(self._resident)

    # ---- loading (inference thread only) ---------------------------------------------------

    def get(self, name: str) -> Resident:
        ref = self.resolve(name)
        with self._lock:
            resident = self._resident.get(ref.id)
            if resident is not None:
                self._resident.move_to_end(ref.id)
                resident.last_used = time.time()
                return resident
        self._make_room()
        resident = self._load(ref)
        with self._lock:
            self._resident[ref.id] = resident
        return resident

    def _load(self, ref: ModelRef) -> Resident:
        kind = ref.kind
        try:
            if kind == "embedding":
                from ominix.engine.embed import load_embedder

                embedder = load_embedder(ref.path)
                model, tokenizer = embedder, embedder.tokenizer
            else:
                from ominix.engine.load import load

                model, tokenizer = load(ref.path)
        except Exception as e:  # LoadError, TokenizerError, bad config, missing shards, ...
            raise ModelLoadError(f"model '{ref.id}' could not be loaded from {ref.path}: {e}") from e
        return Resident(ref, kind, model, tokenizer, _nbytes(model))

    def _make_room(self) -> None:
        while self.max_resident and len(self._resident) >= self.max_resident:
            with self._lock:
                _, victim = self._resident.popitem(last=False)
            del victim
            gc.collect()

    def unload(self, model_id: str) -> bool:
        with self._lock:
            found = self._resident.pop(model_id, None) is not None
        gc.collect()
        return found


def _nbytes(model) -> int:
    from mlx.utils import tree_flatten

    params = model.parameters() if hasattr(model, "parameters") else {}
    return sum(v.nbytes for _, v in tree_flatten(params))
