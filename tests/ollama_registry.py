"""A stand-in for Ollama's registry (registry.ollama.ai) on 127.0.0.1, for pull tests.

It answers what Ollama's client (and ours) calls, the way the registry does:
    GET /v2/{namespace}/{name}/manifests/{tag}   200 + the manifest (Content-Type
        application/vnd.docker.distribution.manifest.v2+json, Docker-Content-Digest);
        404 {"errors": [{"code": "NAME_UNKNOWN"}]} for an unknown model and MANIFEST_UNKNOWN
        for an unknown tag
    GET|HEAD /v2/{namespace}/{name}/blobs/{digest}   307 to /cdn/{digest} (the registry sends
        blobs from a CDN); 404 BLOB_UNKNOWN
    GET /cdn/{digest}   the bytes; honours Range (206 + Content-Range)
Tests can cut a blob's next response after N bytes (the connection drops) or serve it corrupted;
requests are recorded (method, path, Range).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.models: dict[tuple[str, str], dict[str, dict]] = {}  # (ns, name) -> tag -> manifest
        self.cut_after: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self.server = None

    def add_model(self, name: str, tag: str, layers: dict[str, bytes], namespace: str = "library") -> dict:
        """layers: media type suffix (model, template, params, system, license) -> bytes."""
        entries = []
        for kind, data in layers.items():
            self.blobs[digest_of(data)] = data
            entries.append({"mediaType": f"application/vnd.ollama.image.{kind}",
                            "digest": digest_of(data), "size": len(data)})
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        self.blobs[digest_of(config)] = config
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "digest": digest_of(config), "size": len(config)},
                    "layers": entries}
        self.models.setdefault((namespace, name), {})[tag] = manifest
        return manifest

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeRegistry":
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.handle_request(head=True)

            def do_GET(self):
                self.handle_request(head=False)

            def error(self, status, code, message):
                body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_request(self, head):
                with registry.lock:
                    registry.requests.append((self.command, self.path, self.headers.get("Range")))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 5 and parts[0] == "v2" and parts[3] == "manifests":
                    return self.manifest(parts[1], parts[2], parts[4])
                if len(parts) == 5 and parts[0] == "v2" and parts[3] == "blobs":
                    if parts[4] not in registry.blobs:
                        return self.error(404, "BLOB_UNKNOWN", "blob unknown to registry")
                    self.send_response(307)
                    self.send_header("Location", f"http://{registry.host}/cdn/{parts[4]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if len(parts) == 2 and parts[0] == "cdn" and parts[1] in registry.blobs:
                    return self.blob(parts[1], head)
                self.error(404, "NOT_FOUND", "not found")

            def manifest(self, namespace, name, tag):
                tags = registry.models.get((namespace, name))
                if tags is None:
                    return self.error(404, "NAME_UNKNOWN", "repository name not known to registry")
                if tag not in tags:
                    return self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                body = json.dumps(tags[tag]).encode()
                self.send_response(200)
                self.send_header("Content-Type", MANIFEST_TYPE)
                self.send_header("Docker-Content-Digest", digest_of(body))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def blob(self, digest, head):
                data = registry.blobs[digest]
                if digest in registry.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start, status = 0, 200
                if (rng := self.headers.get("Range")) and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                with registry.lock:
                    cut = registry.cut_after.pop(digest, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
