"""A fake Hugging Face hub, ModelScope and plain file server on 127.0.0.1, for download tests.

It answers the calls huggingface_hub 2.x and OminiX make, the way the real services do:

  Hugging Face (HF_ENDPOINT=hub.url)
    GET  /api/models/{repo}[/revision/{rev}][?blobs=true]   model info; siblings carry size, blobId and
                                                            lfs {sha256, size, pointerSize} with blobs
    HEAD|GET /{repo}/resolve/{rev}/{path}                   small files: 200 + ETag (git blob sha1);
                                                            LFS files: 302 to cdn_url/_cdn/... (another
                                                            origin, like the real CDN) + X-Linked-Etag
                                                            (sha256) and X-Linked-Size; X-Repo-Commit
    errors: 401 + X-Error-Code GatedRepo (gated repo, no accepted token), 404 + RepoNotFound,
            404 + RevisionNotFound, 404 + EntryNotFound
  ModelScope (MODELSCOPE_ENDPOINT=hub.url)
    GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=true   {"Code": 200, "Data": {"Files"}}
    GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=              the file
  Direct files
    HEAD|GET /files/dl/{name}

Every file body honours `Range: bytes=a-[b]` (206 + Content-Range, 416 past the end). Tests can
throttle a file (bytes/second), cut its next response after N bytes (the connection drops), or
serve it corrupted; the server records each request (method, path, Range, Authorization, body bytes
sent) and the body bytes sent per file name, so tests can assert on what went over the wire.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".npz", ".pt", ".pth", ".onnx", ".ckpt")
GOOD_TOKEN = "hf_test_token_with_access"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HFRepo:
    files: dict[str, bytes]
    gated: bool = False
    size_override: dict[str, int] = field(default_factory=dict)  # lie about sizes in the metadata
    commit: str = ""
    # Hostile modes: the commit id the listing reports (e.g. "../../X/dir"), and the LFS sha256 it
    # reports per file (e.g. a path instead of a hash, since clients name blobs after it).
    listed_sha: str | None = None
    lfs_sha_override: dict[str, str] = field(default_factory=dict)

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES) or len(self.files[path]) > 100_000


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None
    sent: int = 0  # body bytes this response delivered


class FakeHub:
    def __init__(self):
        self.hf: dict[str, HFRepo] = {}
        self.ms: dict[str, dict[str, bytes]] = {}
        self.plain: dict[str, bytes] = {}
        self.requests: list[Seen] = []
        self.bytes_sent: Counter = Counter()
        self.throttle: dict[str, int] = {}  # file name -> bytes per second
        self.cut_after: dict[str, int] = {}  # file name -> drop the next response after N bytes
        self.corrupt: set[str] = set()
        self.lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    # --- content --------------------------------------------------------------------------------

    def add_hf_repo(self, repo_id: str, files: dict[str, bytes], **kwargs) -> HFRepo:
        """File names are listed as given, so "/X/pwned.json" or "../../X/a" make a hostile hub."""
        repo = HFRepo(dict(files), **kwargs)
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + files[path])
        repo.commit = digest.hexdigest()
        self.hf[repo_id] = repo
        return repo

    def add_ms_repo(self, repo_id: str, files: dict[str, bytes]) -> None:
        """File names are served as given: "/X/pwned.json" or "../../X/a" make a hostile listing."""
        self.ms[repo_id] = dict(files)

    def add_file(self, name: str, data: bytes) -> str:
        self.plain[name] = data
        return f"{self.url}/files/dl/{quote(name)}"

    def sent_requests(self, name: str, method: str = "GET") -> list[Seen]:
        """Requests that carried the body of file `name` (resolve or CDN or ModelScope or /files)."""
        return [r for r in self.requests if r.method == method and _body_name(r.path) == name]

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        # Two listeners: the hub, and a "CDN" on another origin that LFS redirects point to, so clients
        # must drop Authorization on the way (as they do for the real hub's signed CDN URLs).
        self._servers = []
        for _ in range(2):
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def url(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        host, port = self._servers[1].server_address[:2]
        return f"http://{host}:{port}"


def _body_name(path: str) -> str | None:
    parsed = urlsplit(path)
    if "/resolve/" in parsed.path:
        return unquote(parsed.path.split("/resolve/", 1)[1].split("/", 1)[1])
    if parsed.path.startswith("/_cdn/"):
        return unquote(parsed.path.split("/", 5)[5])
    if parsed.path.startswith("/files/dl/"):
        return unquote(parsed.path[len("/files/dl/"):])
    if parsed.path.startswith("/api/v1/models/") and parsed.path.endswith("/repo"):
        return parse_qs(parsed.query).get("FilePath", [None])[0]
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # --- routing --------------------------------------------------------------------------------

    def _route(self, head: bool) -> None:
        hub = self.hub
        self.seen = Seen(self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization"))
        with hub.lock:
            hub.requests.append(self.seen)
        parsed = urlsplit(self.path)
        path, query = unquote(parsed.path), parse_qs(parsed.query)
        if path.startswith("/api/v1/models/"):
            return self._modelscope(path, query, head)
        if path.startswith("/api/models/"):
            return self._hf_info(path[len("/api/models/"):], query)
        if path.startswith("/_cdn/"):
            _, _, repo_owner, repo_name, _sha, name = path.split("/", 5)
            repo = hub.hf.get(f"{repo_owner}/{repo_name}")
            return self._send_file(name, repo.files[name], head)
        if path.startswith("/files/dl/"):
            name = path[len("/files/dl/"):]
            if name not in hub.plain:
                return self._error(404, "Not found")
            return self._send_file(name, hub.plain[name], head)
        if "/resolve/" in path:
            return self._hf_resolve(path, head)
        self._error(404, "no route")

    # --- Hugging Face ---------------------------------------------------------------------------

    def _hf_repo(self, repo_id: str) -> HFRepo | None:
        repo = self.hub.hf.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", code="RepoNotFound")
            return None
        if repo.gated and self.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
            self._error(401, f"Access to model {repo_id} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in.", code="GatedRepo")
            return None
        return repo

    def _check_revision(self, repo: HFRepo, revision: str) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return False

    def _hf_info(self, rest: str, query: dict) -> None:
        parts = rest.split("/")
        repo_id, revision = "/".join(parts[:2]), "main"
        if len(parts) >= 4 and parts[2] == "revision":
            revision = "/".join(parts[3:])
        repo = self._hf_repo(repo_id)
        if repo is None or not self._check_revision(repo, revision):
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, data in sorted(repo.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                size = repo.size_override.get(path, len(data))
                if repo.is_lfs(path):
                    sha = repo.lfs_sha_override.get(path, _sha256(data))
                    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
                    sibling.update(blobId=git_blob_sha1(pointer.encode()), size=size,
                                   lfs={"sha256": sha, "size": size, "pointerSize": len(pointer)})
                else:
                    sibling.update(blobId=git_blob_sha1(data), size=size)
            siblings.append(sibling)
        sha = repo.commit if repo.listed_sha is None else repo.listed_sha
        self._json(200, {"_id": repo.commit[:24], "id": repo_id, "modelId": repo_id, "sha": sha,
                         "private": False, "gated": "manual" if repo.gated else False,
                         "disabled": False, "tags": [], "siblings": siblings})

    def _hf_resolve(self, path: str, head: bool) -> None:
        before, after = path.lstrip("/").split("/resolve/", 1)
        repo_id = before
        revision, name = after.split("/", 1)
        repo = self._hf_repo(repo_id)
        if repo is None or not self._check_revision(repo, revision):
            return
        if name not in repo.files:
            return self._error(404, "Entry not found", code="EntryNotFound",
                               extra={"X-Repo-Commit": repo.commit})
        data = repo.files[name]
        if repo.is_lfs(name):
            sha = _sha256(data)
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn_url}/_cdn/{repo_id}/{sha}/{quote(name)}")
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{git_blob_sha1(data)}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(name, data, head, extra={"X-Repo-Commit": repo.commit,
                                                  "ETag": f'"{git_blob_sha1(data)}"'})

    # --- ModelScope -----------------------------------------------------------------------------

    def _modelscope(self, path: str, query: dict, head: bool) -> None:
        parts = path[len("/api/v1/models/"):].split("/")
        repo_id = "/".join(parts[:2])
        files = self.hub.ms.get(repo_id)
        if files is None:
            return self._json(404, {"Code": 10010205001, "Message": f"model {repo_id} not exists",
                                    "Success": False})
        if parts[2:] == ["repo", "files"]:
            entries, dirs = [], set()
            for name, data in sorted(files.items()):
                for i in range(1, name.count("/") + 1):
                    dirs.add("/".join(name.split("/")[:i]))
                entries.append({"Name": name.rsplit("/", 1)[-1], "Path": name, "Size": len(data),
                                "Sha256": _sha256(data), "Type": "blob", "Revision": "abc"})
            entries += [{"Name": d.rsplit("/", 1)[-1], "Path": d, "Size": 0, "Sha256": "", "Type": "tree"}
                        for d in sorted(dirs)]
            return self._json(200, {"Code": 200, "Data": {"Files": entries}, "Success": True})
        if parts[2:] == ["repo"]:
            name = query.get("FilePath", [""])[0]
            if name not in files:
                return self._json(404, {"Code": 10010205001, "Message": "file not exists", "Success": False})
            return self._send_file(name, files[name], head)
        self._error(404, "no route")

    # --- bodies ---------------------------------------------------------------------------------

    def _send_file(self, name: str, data: bytes, head: bool, extra: dict | None = None) -> None:
        hub = self.hub
        if name in hub.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        start, end, status = 0, len(data) - 1, 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes="):].partition("-")
            start = int(first)
            end = min(int(last), len(data) - 1) if last else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end + 1]
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        with hub.lock:
            cut = hub.cut_after.pop(name, None)
        rate = hub.throttle.get(name)
        step = 16 * 1024 if rate else 256 * 1024
        sent = 0
        try:
            while sent < len(body):
                chunk = body[sent:sent + step]
                if cut is not None and sent + len(chunk) > cut:
                    chunk = chunk[:max(cut - sent, 0)]
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                with hub.lock:
                    hub.bytes_sent[name] += len(chunk)
                    self.seen.sent += len(chunk)
                if cut is not None and sent >= cut:
                    self.close_connection = True
                    return  # the response ends short; the client sees a dropped connection
                rate = hub.throttle.get(name)
                if rate:
                    time.sleep(len(chunk) / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, extra: dict | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
