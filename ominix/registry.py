"""The model catalog: load, validate, look up, and the user's overlay file.

The shipped catalog is `registry/models_registry.json` (packaged as `ominix._catalog`). Its schema is
OminiX Studio's (seed 000): `{"version": str, "models": [entry, ...]}`, each entry with

    id, name, description, category, tags?,
    source   {kind, ...}                      (see SOURCE KINDS)
    storage  {local_path, size_bytes, size_display}
    runtime  {api_type, api_model_id, memory_gb, platforms?, supports_images?, supports_streaming?,
              quantization?}
    ui       {panel_type, icon?}

OminiX adds a few optional top-level fields:
    architecture   the module under ominix/models/ that runs the checkpoint ("qwen3", "glm4_moe", ...)
    aliases        other names that resolve to this entry (case-insensitive, e.g. "qwen3:0.6b")
    notes          why an entry is what it is (e.g. why a repo differs from the Studio catalog)
    requires       ids of other entries this one needs at run time (funasr-qwen4b needs qwen3-4b)

Enums are seed 000's, extended minimally for embeddings:
    category    llm, vlm, asr, tts, image_gen, + embedding
    api_type    chat_completions, speech_recognition, text_to_speech, image_generation, + embeddings
    panel_type  llm_chat, vlm_chat, asr, tts, image_gen, + embedding
and category fixes panel_type (llm -> llm_chat, vlm -> vlm_chat, others the same word).

SOURCE KINDS
    hugging_face  {repo_id, revision="main", allow_patterns?}   -> the shared HF cache
    model_scope   {repo_id, revision="master"}                  -> models_dir()/<id>/
    url           {url, sha256 (64 hex or null), filename?}     -> models_dir()/<id>/<filename>
    manual        {url (where to get it), files: [relpaths]}    -> the user places `files` under
                                                                   storage.local_path
`allow_patterns` (glob list) limits a hugging_face pull to the files a runtime needs, for repos that
also carry ONNX/TF/PyTorch copies of the same weights.

The user overlay (config.user_registry_path()) has the same schema; its entries add to the catalog or
replace the shipped entry with the same id.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ominix import config
from ominix.hub.names import hf_repo_dir, is_repo_id

CATALOG_VERSION = "1.0.0"

CATEGORY_PANEL = {
    "llm": "llm_chat",
    "vlm": "vlm_chat",
    "asr": "asr",
    "tts": "tts",
    "image_gen": "image_gen",
    "embedding": "embedding",
}
CATEGORY_API = {
    "llm": "chat_completions",
    "vlm": "chat_completions",
    "asr": "speech_recognition",
    "tts": "text_to_speech",
    "image_gen": "image_generation",
    "embedding": "embeddings",
}
CATEGORIES = tuple(CATEGORY_PANEL)
PANEL_TYPES = tuple(CATEGORY_PANEL.values())
API_TYPES = tuple(dict.fromkeys(CATEGORY_API.values()))
SOURCE_KINDS = ("hugging_face", "model_scope", "url", "manual")

_ENTRY_KEYS = {
    "id", "name", "description", "category", "tags", "source", "storage", "runtime", "ui",
    "architecture", "aliases", "notes", "requires",
}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(ValueError):
    """A catalog or overlay problem; the message names the entry and the field."""


class UnknownModelError(RegistryError):
    """No catalog entry has this id or alias."""


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    description: str
    category: str
    tags: tuple
    source: dict
    storage: dict
    runtime: dict
    ui: dict
    architecture: str | None = None
    aliases: tuple = ()
    origin: str = "catalog"
    notes: str | None = None
    requires: tuple = ()

    @property
    def source_kind(self) -> str:
        return self.source["kind"]

    @property
    def repo_id(self) -> str | None:
        return self.source.get("repo_id")

    @property
    def revision(self) -> str | None:
        if self.source_kind == "hugging_face":
            return self.source.get("revision") or "main"
        if self.source_kind == "model_scope":
            return self.source.get("revision") or "master"
        return None

    @property
    def size_bytes(self) -> int:
        return int(self.storage["size_bytes"])

    @property
    def local_path(self) -> Path:
        return Path(self.storage["local_path"]).expanduser()

    def names(self) -> list[str]:
        return [self.id, *self.aliases]

    def to_dict(self) -> dict:
        out: dict = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "tags": list(self.tags),
        }
        if self.architecture:
            out["architecture"] = self.architecture
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.notes:
            out["notes"] = self.notes
        if self.requires:
            out["requires"] = list(self.requires)
        out.update(source=dict(self.source), storage=dict(self.storage),
                   runtime=dict(self.runtime), ui=dict(self.ui))
        return out


@dataclass
class Catalog:
    entries: list[ModelEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {}
        for entry in self.entries:
            for name in entry.names():
                self._by_name[name.lower()] = entry

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, name: str) -> ModelEntry | None:
        return self._by_name.get(name.strip().lower())

    def get(self, name: str) -> ModelEntry:
        entry = self.find(name)
        if entry is None:
            close = difflib.get_close_matches(name.lower(), list(self._by_name), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownModelError(
                f"unknown model '{name}': {hint}run `ominix list --all` to see catalog ids"
            )
        return entry

    def by_category(self, category: str) -> list[ModelEntry]:
        return [e for e in self.entries if e.category == category]

    def by_repo_id(self, repo_id: str) -> ModelEntry | None:
        """The first hugging_face entry that downloads `repo_id` (case-insensitive)."""
        wanted = repo_id.lower()
        for entry in self.entries:
            if entry.source_kind == "hugging_face" and entry.repo_id.lower() == wanted:
                return entry
        return None


# --- validation -------------------------------------------------------------------------------


def _fail(where: str, field_name: str, problem: str) -> RegistryError:
    return RegistryError(f"{where}: field '{field_name}' {problem}")


def _need(obj: dict, key: str, kind, where: str, prefix: str = "") -> object:
    name = f"{prefix}{key}"
    if key not in obj or obj[key] is None:
        raise _fail(where, name, "is required")
    value = obj[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok or (kind is str and not value.strip()):
        raise _fail(where, name, f"must be a non-empty {getattr(kind, '__name__', kind)}")
    return value


def _optional(obj: dict, key: str, kind, where: str, prefix: str = ""):
    if obj.get(key) is None:
        return None
    if not isinstance(obj[key], kind) or isinstance(obj[key], bool) and kind is not bool:
        raise _fail(where, f"{prefix}{key}", f"must be a {kind.__name__}")
    return obj[key]


def _string_list(obj: dict, key: str, where: str, prefix: str = "") -> tuple:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"{prefix}{key}", "must be a list of non-empty strings")
    return tuple(value)


def _check_relpath(path: str, where: str, field_name: str) -> None:
    parts = Path(path).parts
    if not parts or os.path.isabs(path) or ".." in parts or "\\" in path:
        raise _fail(where, field_name, f"has '{path}': files must be relative paths inside the model folder")


def _check_repo_id(repo_id: str, where: str) -> None:
    if not is_repo_id(repo_id):
        raise _fail(where, "source.repo_id", f"'{repo_id}' is not of the form owner/repo")


def _check_source(source: dict, where: str) -> None:
    kind = _need(source, "kind", str, where, "source.")
    if kind not in SOURCE_KINDS:
        raise _fail(where, "source.kind", f"'{kind}' is not one of {', '.join(SOURCE_KINDS)}")
    if kind in ("hugging_face", "model_scope"):
        _check_repo_id(_need(source, "repo_id", str, where, "source."), where)
        revision = _optional(source, "revision", str, where, "source.")
        if revision is not None and (not revision or any(c.isspace() for c in revision)):
            raise _fail(where, "source.revision", f"'{revision}' is not a branch, tag or commit")
        _string_list(source, "allow_patterns", where, "source.")
    elif kind == "url":
        url = _need(source, "url", str, where, "source.")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise _fail(where, "source.url", f"'{url}' is not an http(s) URL")
        sha = source.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha.lower())):
            raise _fail(where, "source.sha256", "must be 64 hex digits or null")
        filename = _optional(source, "filename", str, where, "source.")
        if filename is not None and ("/" in filename or "\\" in filename or filename in ("", ".", "..")):
            raise _fail(where, "source.filename", f"'{filename}' must be a plain file name")
        if filename is None and not Path(parsed.path).name:
            raise _fail(where, "source.filename", "is required when the URL does not end in a file name")
    else:  # manual
        _need(source, "url", str, where, "source.")
        files = source.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise _fail(where, "source.files", "must be a non-empty list of relative paths")
        for path in files:
            _check_relpath(path, where, "source.files")


def _entry_from_dict(raw: object, where: str, origin: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: an entry must be a JSON object")
    entry_id = _need(raw, "id", str, where)
    where = f"{where} '{entry_id}'"
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise _fail(where, unknown[0], f"is not a known entry field (known: {', '.join(sorted(_ENTRY_KEYS))})")
    if not _ID_RE.match(entry_id):
        raise _fail(where, "id", f"'{entry_id}' must be a lowercase slug (a-z, 0-9, '.', '_', '-')")
    name = _need(raw, "name", str, where)
    description = _need(raw, "description", str, where)
    category = _need(raw, "category", str, where)
    if category not in CATEGORIES:
        raise _fail(where, "category", f"'{category}' is not one of {', '.join(CATEGORIES)}")
    tags = _string_list(raw, "tags", where)

    source = _need(raw, "source", dict, where)
    _check_source(source, where)

    storage = _need(raw, "storage", dict, where)
    _need(storage, "local_path", str, where, "storage.")
    size = _need(storage, "size_bytes", int, where, "storage.")
    if size < 0:
        raise _fail(where, "storage.size_bytes", f"is negative ({size})")
    _need(storage, "size_display", str, where, "storage.")

    runtime = _need(raw, "runtime", dict, where)
    api_type = _need(runtime, "api_type", str, where, "runtime.")
    if api_type not in API_TYPES:
        raise _fail(where, "runtime.api_type", f"'{api_type}' is not one of {', '.join(API_TYPES)}")
    _need(runtime, "api_model_id", str, where, "runtime.")
    memory = _need(runtime, "memory_gb", float, where, "runtime.")
    if memory < 0:
        raise _fail(where, "runtime.memory_gb", f"is negative ({memory})")
    _string_list(runtime, "platforms", where, "runtime.")
    for flag in ("supports_images", "supports_streaming"):
        if runtime.get(flag) is not None and not isinstance(runtime[flag], bool):
            raise _fail(where, f"runtime.{flag}", "must be true or false")
    _optional(runtime, "quantization", str, where, "runtime.")

    ui = _need(raw, "ui", dict, where)
    panel = _need(ui, "panel_type", str, where, "ui.")
    if panel not in PANEL_TYPES:
        raise _fail(where, "ui.panel_type", f"'{panel}' is not one of {', '.join(PANEL_TYPES)}")
    if CATEGORY_PANEL[category] != panel:
        raise _fail(where, "ui.panel_type",
                    f"'{panel}' does not match category '{category}' (expected '{CATEGORY_PANEL[category]}')")

    architecture = _optional(raw, "architecture", str, where)
    if architecture is not None and not re.match(r"^[a-z][a-z0-9_]*$", architecture):
        raise _fail(where, "architecture", f"'{architecture}' must name a module (lowercase, digits, '_')")
    aliases = _string_list(raw, "aliases", where)
    for alias in aliases:
        if any(c.isspace() for c in alias):
            raise _fail(where, "aliases", f"'{alias}' must not contain spaces")
    return ModelEntry(
        id=entry_id, name=name, description=description, category=category, tags=tags,
        source=dict(source), storage=dict(storage), runtime=dict(runtime), ui=dict(ui),
        architecture=architecture, aliases=aliases, origin=origin,
        notes=_optional(raw, "notes", str, where), requires=_string_list(raw, "requires", where),
    )


def _check_unique(entries: list[ModelEntry], origin: str, check_requires: bool = True) -> None:
    """Every id and alias resolves to one entry; `requires` names known entries."""
    owner: dict[str, str] = {}
    for entry in entries:
        for i, name in enumerate(entry.names()):
            key = name.lower()
            if key in owner and not (i > 0 and owner[key] == entry.id):
                field_name = "id" if i == 0 else "aliases"
                raise RegistryError(
                    f"{origin}: entry '{entry.id}': field '{field_name}' '{name}' is already used by "
                    f"entry '{owner[key]}'"
                )
            owner[key] = entry.id
    ids = {e.id for e in entries}
    for entry in entries if check_requires else ():
        for need in entry.requires:
            if need not in ids:
                raise RegistryError(f"{origin}: entry '{entry.id}': field 'requires' names unknown entry '{need}'")


def validate_document(data: object, origin: str, *, check_requires: bool = True) -> list[ModelEntry]:
    """Validate a parsed catalog document; returns its entries or raises RegistryError."""
    if not isinstance(data, dict):
        raise RegistryError(f"{origin}: the document must be a JSON object with 'version' and 'models'")
    if not isinstance(data.get("version"), str):
        raise RegistryError(f"{origin}: field 'version' is required (a string such as \"1.0.0\")")
    models = data.get("models")
    if not isinstance(models, list):
        raise RegistryError(f"{origin}: field 'models' is required (a list of entries)")
    entries = [_entry_from_dict(raw, f"{origin}: entry #{i}", origin) for i, raw in enumerate(models)]
    _check_unique(entries, origin, check_requires)
    return entries


def _read_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such file") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def validate_file(path) -> list[ModelEntry]:
    """Validate a catalog or overlay file on its own (`requires` may point at shipped entries)."""
    path = Path(path).expanduser()
    return validate_document(_read_json(path), str(path), check_requires=False)


# --- loading ----------------------------------------------------------------------------------


def _shipped_catalog_text() -> tuple[str, str]:
    """The packaged catalog; from a source checkout whose editable install predates the mapping,
    the repository's registry/ folder."""
    from importlib import resources

    try:
        res = resources.files("ominix._catalog").joinpath("models_registry.json")
        return res.read_text(encoding="utf-8"), str(res)
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parent.parent / "registry" / "models_registry.json"
        return path.read_text(encoding="utf-8"), str(path)


def load_shipped_entries() -> list[ModelEntry]:
    text, origin = _shipped_catalog_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{origin}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    return validate_document(data, "catalog")


def load_user_entries() -> list[ModelEntry]:
    path = config.user_registry_path()
    if not path.exists():
        return []
    return validate_document(_read_json(path), str(path), check_requires=False)


def _merge(base: list[ModelEntry], overlay: list[ModelEntry]) -> list[ModelEntry]:
    merged = {e.id: e for e in base}
    for entry in overlay:
        merged[entry.id] = entry
    return list(merged.values())


def load_catalog(include_user: bool = True) -> Catalog:
    """Shipped catalog, plus the user's overlay (which adds entries or replaces them by id)."""
    entries = load_shipped_entries()
    if include_user:
        user = load_user_entries()
        entries = _merge(entries, user)
        _check_unique(entries, str(config.user_registry_path()))
    return Catalog(entries)


# --- the user overlay -------------------------------------------------------------------------


def _write_document(path: Path, entries: list[ModelEntry]) -> None:
    """Write atomically: a crash leaves the old file, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": CATALOG_VERSION, "models": [e.to_dict() for e in entries]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_overlay(user_entries: list[ModelEntry]) -> None:
    """Check the overlay against the shipped catalog, then write it."""
    path = config.user_registry_path()
    _check_unique(_merge(load_shipped_entries(), user_entries), str(path))
    _write_document(path, user_entries)


def add_user_entries(entries: list[dict]) -> list[ModelEntry]:
    """Validate entries and add them to the overlay in one write (replacing entries with their ids)."""
    path = config.user_registry_path()
    new = [_entry_from_dict(e, f"{path}: entry", str(path)) for e in entries]
    ids = {e.id for e in new}
    _save_overlay([e for e in load_user_entries() if e.id not in ids] + new)
    return new


def add_user_entry(entry: dict) -> ModelEntry:
    """Validate `entry` and add it to the overlay (replacing an overlay or shipped entry with its id)."""
    return add_user_entries([entry])[0]


def remove_user_entry(entry_id: str) -> None:
    user = load_user_entries()
    kept = [e for e in user if e.id != entry_id.lower()]
    if len(kept) == len(user):
        shipped = {e.id for e in load_shipped_entries()}
        why = "it is a shipped catalog entry" if entry_id.lower() in shipped else "no such entry"
        raise RegistryError(f"cannot remove '{entry_id}' from {config.user_registry_path()}: {why}")
    _save_overlay(kept)


def export_user_entries(path) -> list[ModelEntry]:
    entries = load_user_entries()
    _write_document(Path(path).expanduser(), entries)
    return entries


def import_user_entries(path) -> list[ModelEntry]:
    """Merge a catalog file (or seed 003's `{"custom": [{id, name, url, sha256}]}` list) into the overlay."""
    path = Path(path).expanduser()
    data = _read_json(path)
    if isinstance(data, dict) and "custom" in data and "models" not in data:
        data = {"version": CATALOG_VERSION, "models": [_custom_url_entry(c, path, i)
                                                       for i, c in enumerate(data["custom"] or [])]}
    imported = validate_document(data, str(path), check_requires=False)
    ids = {e.id for e in imported}
    user = [e for e in load_user_entries() if e.id not in ids] + list(imported)
    _save_overlay(user)
    return imported


def _custom_url_entry(raw: object, path: Path, index: int) -> dict:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("url"), str):
        raise RegistryError(f"{path}: custom entry #{index}: fields 'id' and 'url' are required")
    return make_custom_entry(raw["id"], url=raw["url"], sha256=raw.get("sha256"), name=raw.get("name"))


# --- building custom entries ------------------------------------------------------------------


def size_display(size_bytes: int) -> str:
    if size_bytes <= 0:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size_bytes >= scale:
            return f"~{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def make_custom_entry(
    id: str,
    *,
    repo_id: str | None = None,
    url: str | None = None,
    sha256: str | None = None,
    path=None,
    category: str = "llm",
    architecture: str | None = None,
    name: str | None = None,
) -> dict:
    """An overlay entry for a Hugging Face repo, a direct URL, or a folder already on disk.

    A folder becomes a `manual` entry whose `files` are what is there now, so `ominix verify` notices
    if any of them go missing later.
    """
    where = f"entry '{id}'"
    if sum(x is not None for x in (repo_id, url, path)) != 1:
        raise RegistryError(f"{where}: give exactly one of a repo id, a URL or a path")
    if category not in CATEGORIES:
        raise _fail(where, "category", f"'{category}' is not one of {', '.join(CATEGORIES)}")
    size = 0
    if repo_id is not None:
        repo, _, revision = repo_id.partition("@")
        source = {"kind": "hugging_face", "repo_id": repo, "revision": revision or "main"}
        _check_repo_id(repo, where)
        local_path = str(hf_repo_dir(repo))
    elif url is not None:
        source = {"kind": "url", "url": url, "sha256": sha256.lower() if sha256 else None,
                  "filename": Path(urlparse(url).path).name or None}
        local_path = str(config.models_dir() / id)
    else:
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise RegistryError(f"{where}: path '{path}' is not a directory")
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not files:
            raise RegistryError(f"{where}: path '{folder}' has no files")
        size = sum((folder / f).stat().st_size for f in files)
        source = {"kind": "manual", "url": folder.as_uri(), "files": files}
        local_path = str(folder)
    entry = {
        "id": id,
        "name": name or id,
        "description": f"User-added model ({source['kind']}).",
        "category": category,
        "tags": ["custom"],
        "source": source,
        "storage": {"local_path": local_path, "size_bytes": size, "size_display": size_display(size)},
        "runtime": {
            "api_type": CATEGORY_API[category],
            "api_model_id": id,
            "memory_gb": round(size * 1.2 / 1e9, 1),
            "platforms": ["apple_silicon"],
            "supports_images": category == "vlm",
            "supports_streaming": category in ("llm", "vlm"),
        },
        "ui": {"panel_type": CATEGORY_PANEL[category]},
    }
    if architecture:
        entry["architecture"] = architecture
    _entry_from_dict(entry, "custom entry", "user")  # fail now, naming the field, rather than at save time
    return entry
