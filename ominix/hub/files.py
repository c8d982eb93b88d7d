"""What is on disk: the Hugging Face cache read directly, files of a model folder, and a folder's
format and quantization.

The cache is read directly rather than through huggingface_hub.scan_cache_dir: that drops a whole
repo from its report when one snapshot link is broken, and a broken link is exactly what `verify`
must report."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ominix import config
from ominix.hub.names import hf_repo_dir, repo_id_of_folder
from ominix.registry import ModelEntry

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".npz", ".bin", ".pt", ".pth", ".ckpt", ".onnx")


def hf_repos() -> list[tuple[str, Path]]:
    root = config.hf_hub_cache()
    if not root.is_dir():
        return []
    repos = []
    for d in sorted(root.iterdir()):
        repo_id = repo_id_of_folder(d.name)
        if repo_id and d.is_dir() and (d / "snapshots").is_dir():
            repos.append((repo_id, d))
    return repos


def hf_snapshot(repo_dir: Path, revision: str | None) -> Path | None:
    """The snapshot for a branch/tag (refs/<revision>) or a commit; with no revision, main or newest."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    if revision is None:
        return hf_snapshot(repo_dir, "main") or newest_snapshot(snapshots)
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        snap = snapshots / commit
        return snap if snap.is_dir() else None
    if "/" not in revision and (snapshots / revision).is_dir():
        return snapshots / revision
    return None


def newest_snapshot(snapshots: Path) -> Path | None:
    dirs = [d for d in snapshots.iterdir() if d.is_dir()]
    return max(dirs, key=lambda d: d.stat().st_mtime) if dirs else None


def entry_snapshot(entry: ModelEntry) -> Path | None:
    repo_dir = hf_repo_dir(entry.repo_id)
    snap = hf_snapshot(repo_dir, entry.revision)
    if snap is None and entry.revision == "main":
        snap = hf_snapshot(repo_dir, None)  # pulled at a pinned commit, no refs/main
    return snap


def files_under(folder: Path) -> list[Path]:
    """Regular files and links (broken ones too) under folder, skipping hidden names and temp files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and not name.endswith((".part", ".incomplete")):
                out.append(Path(dirpath) / name)
    return out


def unique_size(paths) -> int:
    """Bytes on disk, each blob counted once however many snapshot links point at it."""
    seen: dict[Path, int] = {}
    for p in paths:
        try:
            real = p.resolve()
            if real not in seen:
                seen[real] = real.stat().st_size
        except OSError:
            continue  # broken link: reported by verify, counts nothing here
    return sum(seen.values())


_GGUF_QUANT = re.compile(r"(?<![a-z0-9])(iq\d_[a-z]+|q\d_k_[sml]|q\d_k|q\d_\d|q\d|bf16|f16|f32)(?![a-z0-9])")


_NAME_QUANT = re.compile(r"(?<![a-z0-9])(\d{1,2})-?bits?(?![a-z0-9])|(?<![a-z0-9])(bf16|fp16|f16|fp32|fp8|mxfp4|int4|int8|awq|gptq)(?![a-z0-9])")


_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
           "BF16": "bf16", "F16": "fp16", "F32": "fp32"}


def read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def quant_from_block(block: dict) -> str | None:
    bits = block.get("bits", block.get("w_bit"))
    group = block.get("group_size", block.get("q_group_size"))
    method = str(block.get("quant_method") or "").lower()
    mode = str(block.get("mode") or "").lower()
    if method in ("awq", "gptq") and bits:
        return f"{method}-w{bits}g{group}" if group else f"{method}-w{bits}"
    if mode and mode != "affine":
        return mode  # mxfp4, nvfp4, ...
    if bits:
        # MLX's default group is 64; name the group only when it differs
        return f"{bits}bit" if group in (None, 64) else f"{bits}bit-g{group}"
    return method or None


def safetensors_dtype(path: Path) -> str | None:
    """The dtype of the first tensor in a safetensors header (8-byte length + JSON)."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    for key, meta in header.items():
        if key != "__metadata__" and isinstance(meta, dict):
            return _DTYPES.get(meta.get("dtype"))
    return None


def detect_format_and_quantization(folder, name: str | None = None) -> tuple[str, str | None]:
    """("safetensors" | "gguf" | "npz" | "pytorch" | "onnx" | "unknown", quantization or None).

    Quantization, first match wins: an MLX `quantization` / HF `quantization_config` block in
    config.json ("4bit", "8bit", "4bit-g32" when the group is not MLX's default 64, "awq-w4g128",
    "mxfp4"); a GGUF quant token in a .gguf file name ("q4_k_m", "q8_0", "iq4_xs", "f16"); a token in
    the model's name or weight file names ("4bit", "bf16", ...); config.json's torch_dtype / dtype;
    the dtype stored in the first safetensors header.
    """
    folder = Path(folder)
    weights = [p for p in files_under(folder) if p.suffix in WEIGHT_SUFFIXES] if folder.is_dir() else []
    suffixes = {p.suffix for p in weights}
    if ".gguf" in suffixes:
        fmt = "gguf"
    elif ".safetensors" in suffixes:
        fmt = "safetensors"
    elif ".npz" in suffixes:
        fmt = "npz"
    elif suffixes & {".bin", ".pt", ".pth", ".ckpt"}:
        fmt = "pytorch"
    elif ".onnx" in suffixes:
        fmt = "onnx"
    else:
        fmt = "unknown"

    cfg = read_config(folder) if folder.is_dir() else {}
    for key in ("quantization", "quantization_config"):
        if isinstance(cfg.get(key), dict) and (quant := quant_from_block(cfg[key])):
            return fmt, quant
    if fmt == "gguf":
        for p in weights:
            if p.suffix == ".gguf" and (m := _GGUF_QUANT.search(p.stem.lower())):
                return fmt, m.group(1)
    for text in [name or folder.name, *(p.stem for p in weights)]:
        if m := _NAME_QUANT.search(text.lower()):
            return fmt, f"{m.group(1)}bit" if m.group(1) else {"f16": "fp16"}.get(m.group(2), m.group(2))
    for source in (cfg, cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}):
        dtype = source.get("torch_dtype") or source.get("dtype")
        if isinstance(dtype, str) and dtype in _DTYPES:
            return fmt, _DTYPES[dtype]
    for p in weights:
        if p.suffix == ".safetensors" and (dtype := safetensors_dtype(p)):
            return fmt, dtype
    return fmt, None


@contextmanager
def written_whole(dst: Path) -> Iterator[Path]:
    """A temporary directory next to `dst` to write into; renamed to `dst` (which must be absent
    or empty) when the block ends, deleted when it raises: `dst` is complete or absent."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
