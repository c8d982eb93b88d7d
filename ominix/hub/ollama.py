"""Ollama's registry: names, manifests, blobs by digest, and the local store of pulled models.

Names use Ollama's syntax after an `ollama:` prefix: `ollama:[HOST[:PORT]/][NAMESPACE/]NAME[:TAG]`
(host registry.ollama.ai over https, namespace `library`, tag `latest` by default; plain http for
127.0.0.1 / localhost or with insecure=True). A pull fetches `/v2/NAMESPACE/NAME/manifests/TAG`,
then every layer (the GGUF model, template, params, system, license) from
`/v2/NAMESPACE/NAME/blobs/DIGEST`, resumable and checked against its sha256 digest.

On disk (under models_dir()/ollama/, Ollama's own layout):
    blobs/sha256-<hex>                         each blob once, shared by every model that lists it
    manifests/<host>/<namespace>/<name>/<tag>  the manifest as the registry sent it
    models/<host>/<namespace>/<name>/<tag>/    what the loader opens: model.gguf (a link to the
                                               model blob) and ollama.json (template, params,
                                               system, license, digests)
Every name component and digest that comes from the user or the network is validated before it
becomes part of a path. Imports no MLX.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ominix import config
from ominix.hub.sources import ChecksumError, DownloadError, NetworkError, RemoteFile, RepoNotFoundError

PREFIX = "ollama:"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
LAYER_PREFIX = "application/vnd.ollama.image."
_COMPONENT = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,79}$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,79}$")
_HOST = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,252})(:[0-9]{1,5})?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
EventHandler = Callable[[dict], None]


class OllamaNameError(ValueError):
    """A name that is not `[HOST[:PORT]/][NAMESPACE/]NAME[:TAG]`."""


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    name: str
    tag: str
    insecure: bool = False

    @property
    def scheme(self) -> str:
        local = self.host.split(":")[0] in ("127.0.0.1", "localhost")
        return "http" if local or self.insecure else "https"

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.namespace}/{self.name}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.name, self.tag

    def short(self) -> str:
        """How Ollama displays it: `name:tag` for the default registry and namespace."""
        head = "" if self.host == DEFAULT_HOST else f"{self.host}/"
        if head or self.namespace != DEFAULT_NAMESPACE:
            head += f"{self.namespace}/"
        return f"{head}{self.name}:{self.tag}"

    def __str__(self) -> str:
        return PREFIX + self.short()


def is_ollama_name(text: str) -> bool:
    return text.strip().lower().startswith(PREFIX)


def claims(text: str) -> bool:
    """Whether a name on the command line means an Ollama model: `ollama:...`, or a bare
    `NAME:TAG` the catalog does not know (catalog aliases such as `qwen3:8b` stay the catalog's)."""
    if is_ollama_name(text):
        return True
    name = text.strip()
    if ":" not in name or "/" in name or "\\" in name or name.startswith(("~", ".")):
        return False
    try:
        parse_name(name)
    except OllamaNameError:
        return False
    from ominix import registry

    try:
        return registry.load_catalog().find(name) is None
    except registry.RegistryError:
        return True


def parse_name(text: str, insecure: bool = False) -> OllamaName:
    """`ollama:[HOST[:PORT]/][NAMESPACE/]NAME[:TAG]` (the prefix optional) -> OllamaName."""
    raw = text.strip()
    if raw.lower().startswith(PREFIX):
        raw = raw[len(PREFIX):]
    parts = raw.split("/")
    if not raw or len(parts) > 3 or any(not p for p in parts):
        raise OllamaNameError(f"'{text}' is not an Ollama model name "
                              "([HOST[:PORT]/][NAMESPACE/]NAME[:TAG])")  # fmt: skip
    last = parts.pop()
    name, _, tag = last.partition(":")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 2:
        host, namespace = parts
    elif len(parts) == 1:  # Ollama's rule: a first part with a dot or a port is a host
        if "." in parts[0] or ":" in parts[0] or parts[0] == "localhost":
            host = parts[0]
        else:
            namespace = parts[0]
    tag = tag or DEFAULT_TAG
    if not _HOST.match(host) or ".." in host:
        raise OllamaNameError(f"'{host}' in '{text}' is not a registry host[:port]")
    for what, value, pattern in (("namespace", namespace, _COMPONENT), ("model name", name, _COMPONENT),
                                 ("tag", tag, _TAG)):  # fmt: skip
        if not pattern.match(value) or ".." in value:
            raise OllamaNameError(f"'{value}' in '{text}' is not a valid {what} (letters, digits, "
                                  "'_', '-', '.'; not starting with '.' or '-')")  # fmt: skip
    return OllamaName(host.lower(), namespace.lower(), name.lower(), tag, insecure)


# --- local store ----------------------------------------------------------------------------------


def root() -> Path:
    return config.models_dir() / "ollama"


def blob_path(digest: str) -> Path:
    if not DIGEST.match(digest or ""):
        raise DownloadError(f"'{digest}' is not a sha256 digest")
    return root() / "blobs" / digest.replace(":", "-")


def manifest_path(name: OllamaName) -> Path:
    return root().joinpath("manifests", *name.parts)


def model_folder(name: OllamaName) -> Path:
    return root().joinpath("models", *name.parts)


def installed() -> list[OllamaName]:
    base = root() / "manifests"
    found = []
    for path in sorted(base.glob("*/*/*/*")):
        if path.is_file():
            try:
                found.append(parse_name("/".join(path.relative_to(base).parts[:3]) + ":" + path.name))
            except OllamaNameError:
                continue  # something not written by us
    return found


def read_manifest(name: OllamaName) -> dict | None:
    path = manifest_path(name)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def local_model(text: str) -> Path | None:
    """The folder of an installed Ollama model (model.gguf + ollama.json), or None."""
    name = parse_name(text)
    folder = model_folder(name)
    return folder if (folder / "ollama.json").is_file() and manifest_path(name).is_file() else None


# --- registry -------------------------------------------------------------------------------------


def _registry_error(response, name: OllamaName, what: str) -> DownloadError:
    try:
        errors = response.json().get("errors") or []
        code, message = errors[0].get("code", ""), errors[0].get("message", "")
    except Exception:
        code, message = "", response.text[:200]
    if response.status_code == 404:
        if code == "NAME_UNKNOWN":
            return RepoNotFoundError(f"pull model manifest: file does not exist: model '{name.name}' "
                                     f"is not in {name.host}/{name.namespace}")  # fmt: skip
        return RepoNotFoundError(f"pull model manifest: file does not exist: {name.short()} "
                                 f"({code or 'not found'})")  # fmt: skip
    return DownloadError(f"{what} for {name.short()}: the registry answered "
                         f"{response.status_code} {code} {message}".rstrip())  # fmt: skip


def fetch_manifest(client, name: OllamaName) -> dict:
    import httpx

    url = f"{name.base}/manifests/{name.tag}"
    try:
        response = client.get(url, headers={"Accept": MANIFEST_TYPE})
    except httpx.TransportError as e:
        raise NetworkError(f"cannot reach {name.host}: {e}") from None
    if response.status_code != 200:
        raise _registry_error(response, name, "manifest")
    try:
        manifest = response.json()
        layers = list(manifest.get("layers") or [])
        if manifest.get("config"):
            layers.append(manifest["config"])
        for layer in layers:
            if not DIGEST.match(layer.get("digest", "")) or not isinstance(layer.get("size"), int):
                raise ValueError(f"layer {layer.get('digest')!r}")
    except (ValueError, AttributeError, TypeError) as e:
        raise DownloadError(f"the manifest of {name.short()} is not valid: {e}") from None
    return manifest


def _layers(manifest: dict) -> list[dict]:
    return list(manifest.get("layers") or []) + ([manifest["config"]] if manifest.get("config") else [])


def pull(text: str, *, insecure: bool = False, on_event: EventHandler | None = None) -> Path:
    """Pull an Ollama model; events follow /api/pull's statuses (see api/ollama.py)."""
    from ominix.hub.download import Plan, http_client
    from ominix.hub.fetch import Progress
    from ominix.hub.sources import Source

    emit = on_event or (lambda event: None)
    name = parse_name(text, insecure)
    emit({"status": "pulling manifest"})
    with http_client() as client:
        manifest = fetch_manifest(client, name)
        for layer in _layers(manifest):
            digest, size = layer["digest"], layer["size"]
            final = blob_path(digest)
            if final.is_file() and final.stat().st_size == size:
                emit({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size,
                      "completed": size})  # fmt: skip
                continue
            remote = RemoteFile(digest, size, f"{name.base}/blobs/{digest}", sha256=digest[7:])
            plan = Plan(Source("url", str(name)), None, [remote], final.parent, final.parent)
            part = Path(str(final) + "-partial")
            plan.present[digest] = part.stat().st_size if part.exists() else 0
            emit({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size,
                  "completed": plan.present[digest]})  # fmt: skip

            def progress(event, digest=digest, size=size):
                if event.get("event") == "progress":
                    emit({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size,
                          "completed": event["bytes"]})  # fmt: skip

            final.parent.mkdir(parents=True, exist_ok=True)
            _fetch_blob(client, remote, part, final, Progress(plan, progress))
            emit({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size,
                  "completed": size})  # fmt: skip
    emit({"status": "verifying sha256 digest"})
    for layer in _layers(manifest):
        if blob_path(layer["digest"]).stat().st_size != layer["size"]:
            raise DownloadError(f"{layer['digest']}: size differs from the manifest")
    emit({"status": "writing manifest"})
    folder = write_model(name, manifest)
    emit({"status": "success"})
    return folder


def _fetch_blob(client, remote: RemoteFile, part: Path, final: Path, progress) -> None:
    """Download one blob under a lock (two pulls sharing it write it once), check its digest."""
    from huggingface_hub.utils import WeakFileLock

    from ominix.hub.fetch import stream_to_part

    lock = root() / ".locks" / f"{final.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if final.is_file() and final.stat().st_size == remote.size:
            return  # another pull finished it while this one waited
        try:
            stream_to_part(client, remote, part, {}, progress)
        except ChecksumError:
            raise DownloadError(f"digest mismatch, file must be downloaded again: "
                                f"sha256:{remote.sha256}") from None  # fmt: skip
        os.replace(part, final)


def _blob_text(layer: dict | None) -> str | None:
    if layer is None:
        return None
    return blob_path(layer["digest"]).read_text(encoding="utf-8", errors="replace")


def write_model(name: OllamaName, manifest: dict) -> Path:
    """Record the manifest and build the loader's folder (model.gguf link + ollama.json)."""
    by_type: dict[str, dict] = {}
    for layer in manifest.get("layers") or []:
        by_type.setdefault(layer.get("mediaType", "").removeprefix(LAYER_PREFIX), layer)
    if "model" not in by_type:
        raise DownloadError(f"{name.short()} has no model layer (only {', '.join(by_type)})")
    params = _blob_text(by_type.get("params"))
    info = {
        "name": str(name), "digest": manifest_digest(manifest),
        "model": by_type["model"]["digest"], "size": sum(l["size"] for l in _layers(manifest)),
        "template": _blob_text(by_type.get("template")), "system": _blob_text(by_type.get("system")),
        "license": _blob_text(by_type.get("license")), "params": json.loads(params) if params else {},
        "modified_at": time.time(),
    }  # fmt: skip
    folder = model_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "model.gguf"
    link.unlink(missing_ok=True)
    try:
        link.symlink_to(blob_path(info["model"]))
    except OSError:
        os.link(blob_path(info["model"]), link)
    _atomic_write(folder / "ollama.json", json.dumps(info, indent=2))
    path = manifest_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(manifest))
    return folder


def manifest_digest(manifest: dict) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def copy(src: str, dst: str) -> Path:
    """`ollama cp`: the same manifest (and blobs) under another name."""
    source, target = parse_name(src), parse_name(dst)
    manifest = read_manifest(source)
    if manifest is None:
        raise RepoNotFoundError(f"model '{source.short()}' not found")
    return write_model(target, manifest)


def remove(text: str) -> list[Path]:
    """Delete a pulled model: its manifest and folder, then every blob no other model lists."""
    import shutil

    name = parse_name(text)
    manifest = read_manifest(name)
    if manifest is None:
        raise RepoNotFoundError(f"model '{name.short()}' not found")
    removed = [manifest_path(name), model_folder(name)]
    manifest_path(name).unlink()
    shutil.rmtree(model_folder(name), ignore_errors=True)
    kept = {layer["digest"] for other in installed() for layer in _layers(read_manifest(other) or {})}
    for layer in _layers(manifest):
        blob = blob_path(layer["digest"])
        if layer["digest"] not in kept and blob.exists():
            blob.unlink()
            removed.append(blob)
    return removed
