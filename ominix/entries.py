"""A catalog entry as a typed record (seed 000's schema plus OminiX's fields), validated once.

pydantic checks shapes and types, the validators here the rules; the first problem becomes one
RegistryError naming the entry and the field, e.g. `catalog: entry #3 'x': field 'source.repo_id'
'a/b--c' is not of the form owner/repo`. registry.py loads, merges and looks these records up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      ValidationError, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from ominix.hub.names import is_repo_id

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

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(ValueError):
    """A catalog or overlay problem; the message names the entry and the field."""


class UnknownModelError(RegistryError):
    """No catalog entry has this id or alias."""




# --- the records -----------------------------------------------------------------------------
# Parsed once, typed: pydantic checks shapes and types, the validators below the rules; the first
# problem becomes one RegistryError that names the entry and the field (`_error`).


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    def to_dict(self) -> dict:
        """The record as catalog JSON: the fields it was given."""
        return self.model_dump(mode="json", exclude_unset=True)


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty str")
    return value


Text = Annotated[StrictStr, AfterValidator(_text)]


def _not_negative(value):
    if value < 0:
        raise ValueError(f"is negative ({value})")
    return value


class Source(_Record):
    kind: Text
    repo_id: Text | None = None
    revision: StrictStr | None = None
    allow_patterns: tuple[Text, ...] = ()
    url: Text | None = None
    sha256: StrictStr | None = None
    filename: StrictStr | None = None
    files: tuple[StrictStr, ...] = ()

    @model_validator(mode="after")
    def _by_kind(self):
        _check_source(self)
        return self


class Storage(_Record):
    local_path: Text
    size_bytes: Annotated[StrictInt, AfterValidator(_not_negative)]
    size_display: Text


class Runtime(_Record):
    api_type: Text
    api_model_id: Text
    memory_gb: Annotated[StrictFloat, AfterValidator(_not_negative)]
    platforms: tuple[Text, ...] = ()
    supports_images: StrictBool | None = None
    supports_streaming: StrictBool | None = None
    quantization: StrictStr | None = None

    @field_validator("api_type")
    @classmethod
    def _api(cls, value: str) -> str:
        return _one_of(value, API_TYPES)


class UI(_Record):
    panel_type: Text

    @field_validator("panel_type")
    @classmethod
    def _panel(cls, value: str) -> str:
        return _one_of(value, PANEL_TYPES)


class ModelEntry(_Record):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Text
    name: Text
    description: Text
    category: Text
    source: Source
    storage: Storage
    runtime: Runtime
    ui: UI
    tags: tuple[Text, ...] = ()
    architecture: StrictStr | None = None
    aliases: tuple[Text, ...] = ()
    notes: StrictStr | None = None
    requires: tuple[Text, ...] = ()
    origin: str = Field("catalog", exclude=True)

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"'{value}' must be a lowercase slug (a-z, 0-9, '.', '_', '-')")
        return value

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        return _one_of(value, CATEGORIES)

    @field_validator("architecture")
    @classmethod
    def _module_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z][a-z0-9_]*$", value):
            raise ValueError(f"'{value}' must name a module (lowercase, digits, '_')")
        return value

    @field_validator("aliases")
    @classmethod
    def _no_spaces(cls, value: tuple) -> tuple:
        for alias in value:
            if any(c.isspace() for c in alias):
                raise ValueError(f"'{alias}' must not contain spaces")
        return value

    @model_validator(mode="after")
    def _panel_fits_category(self):
        expected = CATEGORY_PANEL[self.category]
        if self.ui.panel_type != expected:
            raise PydanticCustomError("panel", "'{panel}' does not match category '{category}' (expected '{expected}')",
                                      {"panel": self.ui.panel_type, "category": self.category, "expected": expected,
                                       "field": "ui.panel_type"})
        return self

    @property
    def source_kind(self) -> str:
        return self.source.kind

    @property
    def repo_id(self) -> str | None:
        return self.source.repo_id

    @property
    def revision(self) -> str | None:
        if self.source_kind == "hugging_face":
            return self.source.revision or "main"
        if self.source_kind == "model_scope":
            return self.source.revision or "master"
        return None

    @property
    def size_bytes(self) -> int:
        return self.storage.size_bytes

    @property
    def local_path(self) -> Path:
        return Path(self.storage.local_path).expanduser()

    def names(self) -> list[str]:
        return [self.id, *self.aliases]

    def to_dict(self) -> dict:
        """The entry as catalog JSON: the fields it was given, in the catalog's order."""
        data = super().to_dict()
        head = {k: data.pop(k) for k in ("id", "name", "description", "category") if k in data}
        head["tags"] = data.pop("tags", [])
        tail = {k: data.pop(k) for k in ("source", "storage", "runtime", "ui")}
        return {**head, **data, **tail}


# --- validation -------------------------------------------------------------------------------


def _one_of(value: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
    return value


def _check_relpath(path: str) -> None:
    parts = Path(path).parts
    if not parts or os.path.isabs(path) or ".." in parts or "\\" in path:
        raise PydanticCustomError("relpath", "has '{path}': files must be relative paths inside the model folder",
                                  {"path": path, "field": "source.files"})


def _source_error(field_name: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("source", message.replace("{", "{{").replace("}", "}}"), {"field": f"source.{field_name}"})


def _check_source(src: Source) -> None:
    if src.kind not in SOURCE_KINDS:
        raise _source_error("kind", f"'{src.kind}' is not one of {', '.join(SOURCE_KINDS)}")
    if src.kind in ("hugging_face", "model_scope"):
        if src.repo_id is None:
            raise _source_error("repo_id", "is required")
        if not is_repo_id(src.repo_id):
            raise _source_error("repo_id", f"'{src.repo_id}' is not of the form owner/repo")
        if src.revision is not None and (not src.revision or any(c.isspace() for c in src.revision)):
            raise _source_error("revision", f"'{src.revision}' is not a branch, tag or commit")
    elif src.kind == "url":
        if src.url is None:
            raise _source_error("url", "is required")
        parsed = urlparse(src.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise _source_error("url", f"'{src.url}' is not an http(s) URL")
        if src.sha256 is not None and not _SHA256_RE.match(src.sha256.lower()):
            raise _source_error("sha256", "must be 64 hex digits or null")
        name = src.filename
        if name is not None and ("/" in name or "\\" in name or name in ("", ".", "..")):
            raise _source_error("filename", f"'{name}' must be a plain file name")
        if name is None and not Path(parsed.path).name:
            raise _source_error("filename", "is required when the URL does not end in a file name")
    else:  # manual
        if src.url is None:
            raise _source_error("url", "is required")
        if not src.files:
            raise _source_error("files", "must be a non-empty list of relative paths")
        for path in src.files:
            _check_relpath(path)


_TYPE_WORDS = {"string_type": "a non-empty str", "int_type": "a non-empty int", "float_type": "a non-empty float",
               "bool_type": "true or false", "tuple_type": "a list of non-empty strings",
               "model_type": "a non-empty dict", "model_attributes_type": "a non-empty dict",
               "dict_type": "a non-empty dict"}


def _error(where: str, error: ValidationError) -> RegistryError:
    """The first problem pydantic found, as `<where>: field '<dotted name>' <problem>`."""
    first = error.errors()[0]
    ctx = first.get("ctx") or {}
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    name = ctx.get("field") or ".".join(loc)
    kind = first["type"]
    if kind == "missing" or (kind in _TYPE_WORDS and first.get("input") is None):
        return field_error(where, name, "is required")
    if kind == "extra_forbidden":
        return field_error(where, name, f"is not a known entry field (known: {', '.join(sorted(set(ModelEntry.model_fields) - {'origin'}))})")
    if kind in _TYPE_WORDS:
        if name.startswith("runtime.supports_"):
            return field_error(where, name, "must be true or false")
        return field_error(where, name, f"must be {_TYPE_WORDS[kind]}")
    if kind == "value_error":
        return field_error(where, name, str(ctx.get("error", first["msg"])))
    return field_error(where, name, first["msg"])


def field_error(where: str, field_name: str, problem: str) -> RegistryError:
    return RegistryError(f"{where}: field '{field_name}' {problem}")


def entry_from_dict(raw: object, where: str, origin: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: an entry must be a JSON object")
    entry_id = raw.get("id")
    if not isinstance(entry_id, str) or not entry_id.strip():
        raise field_error(where, "id", "is required" if entry_id is None else "must be a non-empty str")
    where = f"{where} '{entry_id}'"
    try:
        return ModelEntry.model_validate({**raw, "origin": origin})
    except ValidationError as e:
        raise _error(where, e) from None

