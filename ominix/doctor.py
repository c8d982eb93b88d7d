"""`ominix doctor`: what this machine can run, and why something might be slow or not fit.

`diagnose()` returns a plain dict (the CLI prints it as tables or JSON): backend and device, the BLAS
MLX uses on Linux, library versions, RAM, the model store and its free disk, and for every catalog
entry whether it fits this machine (the device-compatibility check: RAM + disk + platform).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ominix import _blas, config
from ominix.models import can_run

GIB = 1024**3

# A model whose working set is at most this share of RAM runs comfortably next to everything else;
# above it (but still within RAM) it runs but may push the machine into swapping.
RAM_COMFORT_SHARE = 0.75
# Keep this much disk free after a download (logs, caches, the OS).
DISK_MARGIN_SHARE = 0.10

VERDICT_ORDER = ("ok", "tight", "too big", "unsupported")
# Catalog platforms that mean "an MLX checkpoint". The same MLX code runs on MLX's CPU backend on
# Linux (slower), so such entries are a CPU fallback there rather than unsupported.
MLX_PLATFORMS = {"apple_silicon", "macos", "metal", "mlx"}


# --- the machine ---------------------------------------------------------------------------------


def machine_platforms() -> list[str]:
    """Tags this machine matches in a catalog entry's `runtime.platforms`."""
    system, arch = platform.system().lower(), platform.machine().lower()
    arch = {"amd64": "x86_64", "aarch64": "arm64"}.get(arch, arch)
    if system == "darwin":
        tags = ["macos", "darwin", f"macos_{arch}"]
        if arch == "arm64":
            tags += ["apple_silicon", "metal"]
    else:
        tags = [system, f"{system}_{arch}", "cpu"]
    return tags + [arch]


def _meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values


def _cgroup_limit() -> int | None:
    """A container's memory limit (cgroup v2 or v1), if smaller than what the kernel reports."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def _darwin_available() -> int | None:
    """Free + inactive + speculative pages from vm_stat: what macOS can hand out without swapping."""
    try:
        out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    pages = 0
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Pages free", "Pages inactive", "Pages speculative"):
            pages += int(value.strip().rstrip("."))
    return pages * page if pages else None


def memory() -> dict:
    """Total and available RAM in bytes (a container's cgroup limit counts as the total)."""
    total = available = None
    if sys.platform.startswith("linux"):
        info = _meminfo()
        total, available = info.get("MemTotal"), info.get("MemAvailable")
        limit = _cgroup_limit()
        if limit and total and limit < total:
            total, available = limit, min(available or limit, limit)
    else:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            total = None
        available = _darwin_available() if sys.platform == "darwin" else None
    return {"total_bytes": total, "available_bytes": available}


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_free(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would, once it is created)."""
    return shutil.disk_usage(_existing_ancestor(path)).free


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def backend() -> dict:
    """MLX's default device, whether Metal is there, and MLX's version (or why it failed to load)."""
    try:
        import mlx.core as mx
    except Exception as e:  # a broken MLX install is exactly what doctor should report
        return {"mlx_version": None, "device": None, "metal_available": False, "error": str(e)}
    return {
        "mlx_version": mx.__version__,
        "device": str(mx.default_device()),
        "metal_available": bool(mx.metal.is_available()),
        "error": None,
    }


def versions() -> dict:
    def version_of(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import ominix

    return {
        "python": platform.python_version(),
        "ominix": ominix.__version__,
        "mlx": version_of("mlx"),
        "mlx-lm": version_of("mlx-lm"),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }


# --- the model store -----------------------------------------------------------------------------


def _field(item, name: str, default=None):
    return item.get(name, default) if isinstance(item, dict) else getattr(item, name, default)


def store() -> dict:
    """Where models live, how much they take, how much room is left, and which ids are installed."""
    models_dir, hf_cache = config.models_dir(), config.hf_hub_cache()
    result = {
        "models_dir": str(models_dir),
        "hf_hub_cache": str(hf_cache),
        "free_bytes": min(disk_free(models_dir), disk_free(hf_cache)),
        "installed": [],
        "size_bytes": None,
        "error": None,
    }
    try:
        from ominix.hub.store import list_installed
    except ImportError as e:
        result["error"] = f"model store unavailable: {e}"
        result["size_bytes"] = _dir_size(models_dir) if models_dir.is_dir() else 0
        return result
    try:
        installed = list(list_installed())
    except Exception as e:  # a damaged store must not stop the rest of the report
        result["error"] = f"could not list installed models: {e}"
        return result
    for item in installed:
        result["installed"].append(
            {
                "id": _field(item, "id") or _field(item, "model_id"),
                "path": str(_field(item, "path", "") or ""),
                "size_bytes": int(_field(item, "size_bytes", 0) or 0),
            }
        )
    result["size_bytes"] = sum(m["size_bytes"] for m in result["installed"])
    return result


# --- the device-compatibility check --------------------------------------------------------------


def _ram_verdict(memory_gb: float | None, ram: dict) -> tuple[str, str]:
    total, available = ram["total_bytes"], ram["available_bytes"]
    if memory_gb is None or not total:
        return "ok", "memory need unknown"
    need = memory_gb * GIB
    have = f"needs {memory_gb:.1f} GB of {total / GIB:.1f} GB RAM"
    if need > total:
        return "too big", have
    if need > RAM_COMFORT_SHARE * total or (available and need > available):
        return "tight", have + (f" ({available / GIB:.1f} GB available)" if available else "")
    return "ok", have


def _disk_verdict(size_bytes: int | None, free: int, installed: bool) -> tuple[str, str]:
    if installed:
        return "ok", "installed"
    if not size_bytes:
        return "ok", "download size unknown"
    have = f"download {size_bytes / GIB:.1f} GB, {free / GIB:.1f} GB free"
    if size_bytes > free:
        return "too big", have
    if size_bytes > free * (1 - DISK_MARGIN_SHARE):
        return "tight", have
    return "ok", have


def check_entry(entry, ram: dict, free_disk: int, installed_ids: set[str], tags: list[str]) -> dict:
    """Seed 004's check for one catalog entry: platform match, then RAM, then disk."""
    runtime = dict(_field(entry, "runtime", {}) or {})
    storage = dict(_field(entry, "storage", {}) or {})
    platforms = runtime.get("platforms") or []
    if not platforms or any(p.lower() in tags for p in platforms):
        platform_fit = "ok"
    elif "linux" in tags and any(p.lower() in MLX_PLATFORMS for p in platforms):
        platform_fit = "cpu fallback"
    else:
        platform_fit = "unsupported"
    ram_verdict, ram_note = _ram_verdict(runtime.get("memory_gb"), ram)
    is_installed = entry.id in installed_ids
    disk_verdict, disk_note = _disk_verdict(storage.get("size_bytes"), free_disk, is_installed)
    verdict = "unsupported" if platform_fit == "unsupported" else max(
        (ram_verdict, disk_verdict), key=VERDICT_ORDER.index
    )
    return {
        "id": entry.id,
        "verdict": verdict,
        "platforms": platforms,
        "platform": platform_fit,
        "memory_gb": runtime.get("memory_gb"),
        "ram": ram_verdict,
        "ram_note": ram_note,
        "size_bytes": storage.get("size_bytes"),
        "disk": disk_verdict,
        "disk_note": disk_note,
        "installed": is_installed,
        "runs_in_this_build": can_run(entry),
    }


def compatibility(ram: dict, store_info: dict) -> dict:
    """Every catalog entry checked against this machine, or the reason the catalog is unavailable."""
    try:
        from ominix.registry import load_catalog

        entries = list(load_catalog().entries)
    except Exception as e:  # missing or invalid catalog: report it, keep the rest of the report
        return {"models": [], "error": f"catalog unavailable: {e}"}
    installed_ids = {m["id"] for m in store_info["installed"] if m["id"]}
    tags = machine_platforms()
    models = [check_entry(e, ram, store_info["free_bytes"], installed_ids, tags) for e in entries]
    return {"models": models, "error": None}


# --- the report ----------------------------------------------------------------------------------


def _advice(report: dict) -> list[str]:
    notes = []
    blas = report["blas"]
    hint = _blas.slow_blas_hint()
    if hint:
        notes.append(hint.removeprefix("ominix: "))
    elif blas["reason"].startswith("disabled"):
        notes.append("optimized BLAS disabled by OMINIX_BLAS=off: float32 matmuls are slow")
    if report["backend"]["error"]:
        notes.append(f"MLX failed to load: {report['backend']['error']}")
    for section in ("store", "compatibility"):
        if report[section].get("error"):
            notes.append(report[section]["error"])
    return notes


def diagnose() -> dict:
    """The whole report as a JSON-ready dict."""
    ram = memory()
    store_info = store()
    report = {
        "versions": versions(),
        "backend": backend(),
        "blas": _blas.blas_status(),
        "machine": {
            "platforms": machine_platforms(),
            "cpu_count": os.cpu_count(),
            "ram_total_bytes": ram["total_bytes"],
            "ram_available_bytes": ram["available_bytes"],
        },
        "store": store_info,
        "compatibility": compatibility(ram, store_info),
    }
    report["advice"] = _advice(report)
    return report


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GB"


_SOURCES = {"system": "system OpenBLAS", "pip": "pip OpenBLAS (cmeel-openblas)",
            "OMINIX_BLAS": "OMINIX_BLAS", "preloaded": "preloaded"}


def blas_line(blas: dict) -> str:
    """Which BLAS MLX uses: the source (system, pip, OMINIX_BLAS, preloaded) and the file."""
    if not blas["path"]:
        return f"MLX's bundled reference BLAS ({blas['reason']})"
    line = f"{blas['source']}: {_SOURCES.get(blas['source'], '')} {blas['path']}".replace(":  ", ": ")
    return line + (f" ({blas['threads']} threads)" if blas["threads"] else "")


def format_report(report: dict, columns: int | None = None) -> str:
    """The report as plain text; with a terminal `width`, table lines are cut to it with '…'
    (whole when piped). Notes are wrapped at word boundaries instead, since every word counts."""
    v, b, blas, m, s = (report[k] for k in ("versions", "backend", "blas", "machine", "store"))
    blas_line_text = blas_line(blas)
    lines = [
        f"OminiX {v['ominix']}  Python {v['python']}  MLX {v['mlx'] or 'missing'}  "
        f"mlx-lm {v['mlx-lm'] or 'not installed'}",
        f"system   {v['os']}, {m['cpu_count']} CPUs, platforms: {', '.join(m['platforms'])}",
        f"device   {b['device'] or 'unavailable'}  (Metal {'available' if b['metal_available'] else 'not available'})",
        f"BLAS     {blas_line_text}",
        f"RAM      {_gb(m['ram_total_bytes'])} total, {_gb(m['ram_available_bytes'])} available",
        f"store    {s['models_dir']}  (HF cache {s['hf_hub_cache']})",
        f"         {len(s['installed'])} installed, {_gb(s['size_bytes'])} used, {_gb(s['free_bytes'])} free",
    ]
    models = report["compatibility"]["models"]
    if models:
        width = max(len(x["id"]) for x in models)
        lines.append("")
        lines.append(
            f"{'model':<{width}}  {'fits':<11}  {'RAM':<7}  {'disk':<7}  {'platform':<12}  {'runs':<4}  notes"
        )
        for x in models:
            notes = x["ram_note"] + "; " + x["disk_note"]
            if x["platform"] == "unsupported":
                notes = f"catalog lists {', '.join(x['platforms'])}; " + notes
            lines.append(
                f"{x['id']:<{width}}  {x['verdict']:<11}  {x['ram']:<7}  {x['disk']:<7}  "
                f"{x['platform']:<12}  {'yes' if x['runs_in_this_build'] else 'no':<4}  {notes}"
            )
    if columns:
        lines = [line if len(line) <= columns else line[: columns - 1] + "…" for line in lines]
    for note in report["advice"]:
        if columns:
            import textwrap

            lines += textwrap.wrap(f"note: {note}", columns, subsequent_indent="      ", break_long_words=False,
                                   break_on_hyphens=False)
        else:
            lines.append(f"note: {note}")
    return "\n".join(lines)
