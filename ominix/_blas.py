"""An optimized BLAS for MLX's CPU backend on Linux.

MLX's Linux CPU wheel links the reference (netlib) BLAS, so every float32 matmul runs at a few
GFLOP/s whatever its shape. libmlx resolves `cblas_sgemm` through the process's global symbol scope
first, so loading OpenBLAS with RTLD_GLOBAL *before* `mlx.core` is imported makes MLX use it
(20-50x faster prefill in float32). Once `mlx.core` is loaded its symbols are bound and a later load
changes nothing, which is why `ominix/__init__.py` calls `preload()` before anything imports MLX.

macOS is untouched: MLX uses Accelerate and Metal there.

OMINIX_BLAS=off disables the preload; OMINIX_BLAS=/path/to/libfoo.so picks a specific library (any
library exporting `cblas_sgemm`: OpenBLAS, BLIS, MKL's libmkl_rt).
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import sys

INSTALL_HINT = "apt-get install libopenblas0-pthread"

# Searched in order after OMINIX_BLAS. The pthread build first: MLX calls BLAS from its own worker
# thread, and the OpenMP build would add a second thread pool that competes with it.
_SEARCH_GLOBS = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so*",
    "/usr/lib/*-linux-gnu/libopenblas.so*",
    "/usr/lib/*-linux-gnu/openblas-openmp/libopenblas.so*",
    "/usr/lib/*-linux-gnu/openblas-serial/libopenblas.so*",
    "/usr/lib/*/libopenblas*.so*",
    "/usr/lib64/libopenblas*.so*",
    "/usr/lib/libopenblas*.so*",
    "/usr/local/lib/libopenblas*.so*",
    "/opt/OpenBLAS/lib/libopenblas*.so*",
)
_LD_SO_CACHE = "/etc/ld.so.cache"

_status: dict | None = None
_handle: ctypes.CDLL | None = None
_hint_shown = False


def _mapped_blas() -> str | None:
    """A libopenblas already mapped into this process (LD_PRELOAD, or loaded by someone else) that
    exports plain `cblas_sgemm`. numpy's bundled copies rename their symbols (cblas_sgemm64_), so
    MLX cannot use them and they do not count."""
    try:
        with open("/proc/self/maps") as maps:
            paths = dict.fromkeys(line.rsplit(None, 1)[-1] for line in maps)
    except OSError:
        return None
    for path in paths:
        if "libopenblas" in os.path.basename(path) and os.path.isfile(path):
            try:
                if hasattr(ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL), "cblas_sgemm"):
                    return path
            except OSError:
                continue
    return None


def _ld_cache_candidates() -> list[str]:
    """libopenblas paths from the dynamic linker's cache, read directly (no `ldconfig` subprocess)."""
    try:
        with open(_LD_SO_CACHE, "rb") as f:
            data = f.read()
    except OSError:
        return []
    found = re.findall(rb"/[^\x00]*/libopenblas[^\x00/]*\.so[^\x00/]*", data)
    return [p.decode(errors="replace") for p in dict.fromkeys(found)]


def candidates() -> list[str]:
    """Existing OpenBLAS files on this machine, best first (duplicates via symlinks removed)."""
    paths: list[str] = []
    for pattern in _SEARCH_GLOBS:
        # Prefer the soname (libopenblas.so.0) over versioned names and the dev symlink.
        paths.extend(sorted(glob.glob(pattern), key=lambda p: (not p.endswith(".so.0"), p)))
    paths.extend(_ld_cache_candidates())
    unique: dict[str, str] = {}
    for path in paths:
        if os.path.isfile(path):
            unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def _open_with_sgemm(path: str) -> ctypes.CDLL:
    """Load `path` globally, but only if it really exports cblas_sgemm (else leave it local)."""
    local = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    if not hasattr(local, "cblas_sgemm"):
        raise OSError(f"{path} does not export cblas_sgemm")
    # A second dlopen of the same file with RTLD_GLOBAL promotes it into the global scope.
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def _describe(lib: ctypes.CDLL | None) -> dict:
    """OpenBLAS's own build string and thread count, when the library offers them."""
    info: dict = {"config": None, "threads": None}
    if lib is None:
        return info
    if hasattr(lib, "openblas_get_config"):
        lib.openblas_get_config.restype = ctypes.c_char_p
        info["config"] = lib.openblas_get_config().decode(errors="replace").strip()
    if hasattr(lib, "openblas_get_num_threads"):
        lib.openblas_get_num_threads.restype = ctypes.c_int
        info["threads"] = int(lib.openblas_get_num_threads())
    return info


def _new_status(**fields) -> dict:
    status = {
        "platform": sys.platform,
        "requested": os.environ.get("OMINIX_BLAS") or None,
        "path": None,
        "loaded": False,
        "reason": "",
        "mlx_imported_before": "mlx.core" in sys.modules,
        "config": None,
        "threads": None,
        "install_hint": None,
    }
    status.update(fields)
    return status


def preload() -> dict:
    """Load an optimized CBLAS into the global symbol scope, once per process. Never raises."""
    global _status, _handle
    if _status is not None:
        return _status
    requested = (os.environ.get("OMINIX_BLAS") or "").strip()
    if not sys.platform.startswith("linux"):
        _status = _new_status(reason=f"not needed on {sys.platform} (MLX uses Accelerate/Metal)")
        return _status
    if requested.lower() in ("off", "0", "none", "false", "no"):
        _status = _new_status(reason="disabled by OMINIX_BLAS=off")
        return _status

    mlx_first = "mlx.core" in sys.modules
    already = _mapped_blas()
    if already and (not mlx_first or "libopenblas" in os.environ.get("LD_PRELOAD", "")):
        # Preloaded by the user (LD_PRELOAD) or loaded earlier in this process, before MLX.
        _handle = ctypes.CDLL(already, mode=ctypes.RTLD_GLOBAL)
        _status = _new_status(path=already, loaded=True, reason="already loaded in this process")
        _status.update(_describe(_handle))
        return _status
    if mlx_first:
        _status = _new_status(
            reason="mlx.core was imported before ominix, too late to swap its BLAS; "
            "import ominix first (or set LD_PRELOAD)",
        )
        return _status

    if requested:
        paths, errors = [requested], []
    else:
        paths, errors = candidates(), []
    for path in paths:
        try:
            _handle = _open_with_sgemm(path)
        except OSError as e:
            errors.append(str(e))
            continue
        _status = _new_status(path=path, loaded=True, reason="loaded before mlx.core")
        _status.update(_describe(_handle))
        return _status

    if requested:
        reason = f"OMINIX_BLAS={requested} could not be loaded: {'; '.join(errors)}"
    else:
        reason = "no OpenBLAS found" + (f" ({'; '.join(errors)})" if errors else "")
    _status = _new_status(reason=reason, install_hint=None if requested else INSTALL_HINT)
    return _status


def blas_status() -> dict:
    """What preload() did: path (or None), loaded, reason, mlx_imported_before, config, threads."""
    status = dict(preload())
    if _handle is not None:
        status["threads"] = _describe(_handle)["threads"]
    return status


def slow_blas_hint() -> str | None:
    """One line telling the user how to get fast float32 matmuls, or None when nothing is missing."""
    status = preload()
    if status["loaded"] or not status["platform"].startswith("linux"):
        return None
    if status["reason"].startswith("disabled"):
        return None  # the user chose this; do not nag
    if status["install_hint"]:
        return (
            "ominix: MLX is using its slow reference BLAS (float32 runs ~50x slower); "
            f"for the fast one: {status['install_hint']}"
        )
    return f"ominix: MLX is using its slow reference BLAS: {status['reason']}"


def warn_once_if_slow(stream=None) -> None:
    """Print slow_blas_hint() at most once per process. For the CLI and server, never on import."""
    global _hint_shown
    if _hint_shown:
        return
    hint = slow_blas_hint()
    if hint:
        _hint_shown = True
        print(hint, file=stream or sys.stderr)
