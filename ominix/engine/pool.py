"""Resident models: resolve a requested name to files, load once, keep it, report what is loaded.

Two sides with two rules:
- `resolve()`, `available()` and `resident()` touch no MLX; HTTP handlers call them to answer 404s
  and /v1/models without waiting for the inference thread.
- `get()` loads (builds MLX arrays) and must only run off the event loop (the worker, or the loader thread).

Names resolve in this order: models registered at start (`--model`), catalog ids and aliases that are
installed (registry + hub/store), then a local checkpoint directory. With an allow-list (`--models`)
only the registered names resolve, so no client can make the server read other weights.

Residency: several models stay loaded under a memory budget (bytes; estimated from the weight files
before loading, measured after). A model that needs room unloads the least recently used idle ones.
Each model has a keep_alive (Ollama's semantics: seconds, 0 = unload when idle, None = forever);
`expire()` unloads idle models whose time is up. `start_load()` loads on a separate loader thread
(its own MLX stream) so that requests to resident models keep decoding meanwhile.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ominix import kinds
from ominix.engine.budget import default_memory_budget, estimate_bytes, size_text

log = logging.getLogger("ominix.pool")


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
        return kinds.detect(self.path, self.entry).name


@dataclass
class Resident:
    """A loaded model: what its kind's loader built (the MLX module for chat, an
    engine.embed.Embedder for embeddings, ...)."""

    ref: ModelRef
    kind: str  # a name in ominix.kinds.KINDS
    model: object
    tokenizer: object
    nbytes: int
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    keep_alive: float | None = None  # seconds after the last request; None = forever
    expires_at: float | None = None  # when it unloads if still idle; None = never
    active: int = 0  # requests using it now (never unloaded while > 0)
    load_seconds: float = 0.0

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


class ModelPool:
    def __init__(self, max_resident: int | None = None, use_catalog: bool = True, *,
                 memory_budget: int | None = None, keep_alive: float | None = 300.0,
                 allow_only: list[str] | None = None):
        self.max_resident = max_resident
        self.use_catalog = use_catalog
        self.memory_budget = memory_budget if memory_budget is not None else default_memory_budget()
        self.keep_alive = keep_alive  # default for models loaded on demand
        self.on_unload = None  # callback(model_id), e.g. the prompt cache forgetting the model
        self._registered: dict[str, ModelRef] = {}
        self._resident: OrderedDict[str, Resident] = OrderedDict()  # least recently used first
        self._loading: dict[str, Future] = {}
        self._lock = threading.Lock()  # guards the dicts; loads run one at a time on the loader
        self._loader: ThreadPoolExecutor | None = None
        self.allow_only = False
        for name in allow_only or ():
            self.register(name)
        self.allow_only = bool(allow_only)

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
            if self.allow_only:
                for ref in self._registered.values():  # aliases and paths given to --models
                    if name in (str(ref.path), getattr(ref.entry, "id", None)):
                        return ref
        if self.allow_only:
            ids = [r.id for r in self.available()]
            raise ModelNotFoundError(
                f"The model '{name}' does not exist or is not served here. Available models: {', '.join(ids)}", ids
            )
        ref = _ollama_ref(name) if self.use_catalog else None  # pulled from Ollama's registry
        ref = ref or (self._locate(name) if self.use_catalog else self._folder(name))
        if ref is not None:
            return ref
        ids = [r.id for r in self.available()]
        shown = ", ".join(ids) if ids else "none installed (run `ominix pull <id>`)"
        raise ModelNotFoundError(f"The model '{name}' does not exist. Available models: {shown}", ids)

    def _locate(self, name: str) -> ModelRef | None:
        """The one resolver (hub/store.locate): catalog ids and aliases, installed ids, `owner/repo`
        in the HF cache, paths."""
        from ominix import registry
        from ominix.hub import store

        try:
            found = store.locate(name)
        except (registry.RegistryError, store.StoreError):
            return None  # unknown to the catalog and the store
        if found.path is None:
            if found.entry is None:
                return None
            ids = [r.id for r in self.available()]
            raise ModelNotFoundError(
                f"The model '{name}' is in the catalog but not installed: run `ominix pull {found.entry.id}`", ids)
        if found.entry is None and not is_model_folder(Path(found.path)):
            return None
        return ModelRef(found.id if found.entry else name, Path(found.path).resolve(), found.entry)

    @staticmethod
    def _folder(name: str) -> ModelRef | None:
        path = Path(name).expanduser()
        return ModelRef(name, path.resolve()) if is_model_folder(path) else None

    def available(self) -> list[ModelRef]:
        """Registered models, then installed catalog models (no duplicates)."""
        with self._lock:
            refs = dict(self._registered)
        if self.use_catalog and not self.allow_only:
            try:
                from ominix.hub import store

                for m in store.list_installed():
                    refs.setdefault(m.id, ModelRef(m.id, Path(m.path), getattr(m, "entry", None)))
            except Exception:  # a broken store must not take the model list down with it
                pass
            for ref in _ollama_refs():
                refs.setdefault(ref.id, ref)
        return list(refs.values())

    def resident(self) -> dict[str, Resident]:
        with self._lock:
            return dict(self._resident)

    def loading(self) -> list[str]:
        with self._lock:
            return list(self._loading)

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._resident.values())

    # ---- residency (inference thread, except the loading itself) -------------------------

    def lookup(self, model_id: str) -> Resident | None:
        """The resident model (marked as just used), or None."""
        with self._lock:
            resident = self._resident.get(model_id)
            if resident is not None:
                self._resident.move_to_end(model_id)
                resident.last_used = time.time()
            return resident

    def get(self, name: str) -> Resident:
        """The resident model for `name`, loading it here and now if needed (blocking)."""
        ref = self.resolve(name)
        resident = self.lookup(ref.id)
        if resident is not None:
            return resident
        return self.start_load(ref).result()

    def start_load(self, ref: ModelRef, keep_alive: float | None | str = "default") -> Future:
        """Load `ref` on the loader thread (or join the load under way); the future gives the
        Resident. Makes room under the budget first; raises ModelLoadError if it cannot fit."""
        with self._lock:
            if ref.id in self._resident:
                done: Future = Future()
                done.set_result(self._resident[ref.id])
                return done
            if ref.id in self._loading:
                return self._loading[ref.id]
        self._make_room(estimate_bytes(ref.path), ref.id)
        if self._loader is None:
            self._loader = ThreadPoolExecutor(1, thread_name_prefix="ominix-loader")
        ka = self.keep_alive if keep_alive == "default" else keep_alive
        future = self._loader.submit(self._load_and_keep, ref, ka)
        with self._lock:
            self._loading[ref.id] = future
        return future

    def _load_and_keep(self, ref: ModelRef, keep_alive: float | None) -> Resident:
        try:
            resident = self._load(ref)
        finally:
            with self._lock:
                self._loading.pop(ref.id, None)
        resident.keep_alive = keep_alive
        resident.expires_at = None if keep_alive is None else time.time() + keep_alive
        with self._lock:
            self._resident[ref.id] = resident
        return resident

    def _load(self, ref: ModelRef) -> Resident:
        import mlx.core as mx

        kind = kinds.detect(ref.path, ref.entry)
        start = time.perf_counter()
        try:
            loader = kinds.load_function(kind)
            # A stream of its own: evaluating the weights here does not queue behind (or hold up)
            # the decode steps of the inference thread.
            with mx.stream(_loader_stream()):
                model, tokenizer = loader(ref.path)
                mx.synchronize()
        except Exception as e:  # LoadError, TokenizerError, bad config, missing shards, ...
            raise ModelLoadError(f"model '{ref.id}' could not be loaded from {ref.path}: {e}") from e
        resident = Resident(ref, kind.name, model, tokenizer, _nbytes(model))
        resident.load_seconds = time.perf_counter() - start
        return resident

    def _make_room(self, needed: int, model_id: str) -> None:
        """Unload idle models, least recently used first, until `needed` more bytes fit."""
        if needed > self.memory_budget:
            raise ModelLoadError(
                f"model '{model_id}' needs about {size_text(needed)} but the memory budget is "
                f"{size_text(self.memory_budget)} (set --memory-budget)"
            )
        while True:
            with self._lock:
                used = sum(r.nbytes for r in self._resident.values())
                count = len(self._resident) + len(self._loading)
                over = used + needed > self.memory_budget or (self.max_resident and count >= self.max_resident)
                idle = [r for r in self._resident.values() if r.active == 0]
            if not over:
                return
            if not idle:
                raise ModelLoadError(
                    f"model '{model_id}' needs about {size_text(needed)}, but {size_text(used)} of the "
                    f"{size_text(self.memory_budget)} memory budget is held by models serving requests; try again later"
                )
            log.info("unloading %s to make room for %s", idle[0].id, model_id)
            self.unload(idle[0].id)

    def release(self, resident: Resident, keep_alive: float | None | str = "default") -> None:
        """A request is done with `resident`; restart its keep_alive timer."""
        resident.active = max(0, resident.active - 1)
        resident.last_used = time.time()
        if keep_alive != "default":
            resident.keep_alive = keep_alive
        ka = resident.keep_alive
        resident.expires_at = None if ka is None else time.time() + ka

    def expire(self, now: float | None = None) -> list[str]:
        """Unload idle models whose keep_alive ran out; returns their ids."""
        now = time.time() if now is None else now
        with self._lock:
            due = [r.id for r in self._resident.values()
                   if r.active == 0 and r.expires_at is not None and r.expires_at <= now]
        for model_id in due:
            self.unload(model_id)
        return due

    def unload(self, model_id: str) -> bool:
        with self._lock:
            found = self._resident.pop(model_id, None) is not None
        if found:
            if self.on_unload is not None:
                self.on_unload(model_id)
            gc.collect()
            try:
                import mlx.core as mx

                mx.clear_cache()
            except Exception:
                pass
        return found

    def shutdown(self) -> None:
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)


_LOADER_STREAM = None


def _ollama_ref(name: str) -> ModelRef | None:
    """An installed model pulled from an Ollama registry, under Ollama's short name
    (`qwen3:0.6b`; `ollama:` prefix and `:latest` optional)."""
    from ominix.hub import ollama

    try:
        parsed = ollama.parse_name(name)
        folder = ollama.local_model(name)
    except (ollama.OllamaNameError, OSError, ValueError):
        return None
    return ModelRef(parsed.short(), folder.resolve()) if folder is not None else None


def _ollama_refs() -> list[ModelRef]:
    from ominix.hub import ollama

    refs = []
    for name in ollama.installed():
        folder = ollama.local_model(str(name))
        if folder is not None:
            refs.append(ModelRef(name.short(), folder.resolve()))
    return refs


def is_model_folder(path: Path) -> bool:
    """A directory some kind can recognise (config.json, a diffusers, mflux, FunASR or GPT-SoVITS
    layout)."""
    files = ("config.json", "model_index.json", "config.yaml", "chinese-hubert-base/config.json")
    return path.is_dir() and (any((path / f).is_file() for f in files) or kinds.is_mflux_pack(path))


def _loader_stream():
    """A stream of the loader thread's own (MLX thread-local streams are meant for this)."""
    global _LOADER_STREAM
    import mlx.core as mx

    if _LOADER_STREAM is None:
        _LOADER_STREAM = mx.new_thread_local_stream(mx.default_device())
    return _LOADER_STREAM


def _nbytes(model) -> int:
    from mlx.utils import tree_flatten

    params = model.parameters() if hasattr(model, "parameters") else {}
    return sum(v.nbytes for _, v in tree_flatten(params))
