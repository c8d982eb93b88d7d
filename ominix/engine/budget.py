"""Sizes and durations, without MLX: how many bytes a model's files will take once loaded, the
machine's memory and the default budget, and the user's spellings of memory sizes ('8GB', '50%')
and of Ollama's keep_alive ('5m', '-1')."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ominix.kinds import is_image_pipeline


def size_text(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def estimate_bytes(path: Path) -> int:
    """Memory a model will take, from its weight files (read before loading). A diffusers
    pipeline (model_index.json) keeps its weights in one subfolder per component (transformer/,
    text_encoder/, vae/...): those are summed."""
    path = Path(path)
    total = _weight_bytes(path)
    if total == 0 and is_image_pipeline(path):
        total = sum(_weight_bytes(path / name) for name in _pipeline_components(path))
    return total


def _weight_bytes(folder: Path) -> int:
    files = (list(folder.glob("*.safetensors")) or list(folder.glob("*.gguf"))
             or list(folder.glob("*.bin")))  # fmt: skip
    return sum(f.stat().st_size for f in files)


def _pipeline_components(path: Path) -> list[str]:
    """The component folders model_index.json names (entries `name: [library, class]`); every
    subfolder if the index cannot be read."""
    try:
        index = json.loads((path / "model_index.json").read_text())
        names = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)]
    except (OSError, ValueError, AttributeError):
        names = []
    names = [n for n in names if "/" not in n and n not in ("", ".", "..")]
    return names or [d.name for d in path.iterdir() if d.is_dir()]


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 1024**3


def default_memory_budget() -> int:
    return int(total_memory() * 0.7)


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_memory(value: str | int) -> int:
    """'8GB', '512MiB', '50%' (of RAM) or a byte count -> bytes."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(%|[kmgt]?i?b?)", text)
    if not m or (m.group(2) not in _UNITS and m.group(2) != "%"):
        raise ValueError(f"memory size must look like '8GB', '512MB', '50%' or a byte count, got {value!r}")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"memory percentage must be in (0, 100], got {value!r}")
        return int(total_memory() * number / 100)
    return int(number * _UNITS[unit])


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


MAX_KEEP_ALIVE = 100 * 365 * 86400.0  # seconds; longer means forever


def parse_keep_alive(value) -> float | None:
    """Ollama's keep_alive: seconds (number) or a duration ('5m', '30s', '1h30m', '-1'); negative
    keeps the model forever (None), 0 unloads it as soon as it is idle."""
    if value is None:
        raise ValueError("keep_alive must be a duration like '5m' or a number of seconds")
    if isinstance(value, bool):
        raise ValueError(f"keep_alive must be a duration like '5m' or a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            sign = -1 if text.startswith("-") else 1
            parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.lstrip("-"))
            if not parts or "".join(n + u for n, u in parts) != text.lstrip("-"):
                raise ValueError(f"keep_alive must be a duration like '5m', '30s', '1h' or seconds, got {value!r}") from None
            seconds = sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds != seconds:  # NaN
        raise ValueError(f"keep_alive must be a duration like '5m' or a number of seconds, got {value!r}")
    # Negative, infinite or beyond any clock (time.gmtime overflows): forever.
    return None if seconds < 0 or seconds > MAX_KEEP_ALIVE else seconds
