"""An optimized BLAS for MLX's CPU backend on Linux.

MLX's Linux CPU wheel links the reference (netlib) BLAS, so every float32 matmul runs at a few
GFLOP/s whatever its shape. libmlx resolves `cblas_sgemm` through the process's global symbol scope
first, so loading OpenBLAS with RTLD_GLOBAL *before* `mlx.core` is imported makes MLX use it
(20-50x faster prefill in float32). Once `mlx.core` is loaded its symbols are bound and a later load
changes nothing, which is why `ominix/__init__.py` calls `preload()` before anything imports MLX.

macOS is untouched: MLX uses Accelerate and Metal there.

Where it comes from, in order: the system's OpenBLAS (a distribution package, tuned for the
machine), else the `cmeel-openblas` wheel that `pip install` brings on Linux (standard CBLAS/LAPACK
symbol names, a pthread build). That wheel's library links libgfortran.so.5 and does not ship it: on
a bare image without the libgfortran5 package it cannot load, and MLX keeps its reference BLAS (the
status says why and how to fix it). cmeel-openblas 0.3.31 is also built for one CPU (SKYLAKEX, not
DYNAMIC_ARCH): on a CPU without AVX-512 its first sgemm dies with SIGILL. So every library's build
target is checked against this CPU's flags before MLX is allowed to bind to it. It is the optional
extra `ominix[blas]` (in `dev` too, so the tests see it), not a default dependency.
`status["source"]` says which one is in use.

OMINIX_BLAS=off disables the preload; OMINIX_BLAS=system or OMINIX_BLAS=pip picks one source;
OMINIX_BLAS=/path/to/libfoo.so picks a specific library (any library exporting `cblas_sgemm`:
OpenBLAS, BLIS, MKL's libmkl_rt).
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import sys

INSTALL_HINT = "apt-get install libopenblas0-pthread"
GFORTRAN_HINT = "apt-get install libgfortran5"
_PIP_LIB = os.path.join("cmeel.prefix", "lib", "libopenblas.so.0")  # where cmeel-openblas puts it

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


def pip_candidates() -> list[str]:
    """The cmeel-openblas wheel's library in this interpreter's site-packages (a few stat calls)."""
    found = []
    for entry in sys.path:
        path = os.path.join(entry or ".", _PIP_LIB)
        if os.path.isfile(path) and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found


def unusable(path: str) -> str | None:
    """Why `path` cannot serve MLX here (a missing libgfortran.so.5, another CPU's build, no
    cblas_sgemm), or None when it can. Loads it locally, so MLX in this process is unaffected."""
    try:
        local = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    except OSError as e:
        return "needs libgfortran.so.5" if "libgfortran" in str(e) else str(e)
    if not hasattr(local, "cblas_sgemm"):
        return "does not export cblas_sgemm"
    return _cpu_mismatch(local)


# OpenBLAS build targets (a build without DYNAMIC_ARCH runs only on CPUs that have these flags).
_TARGET_FLAGS = {
    "SAPPHIRERAPIDS": ("avx512f", "avx512_bf16"), "COOPERLAKE": ("avx512f", "avx512_bf16"),
    "SKYLAKEX": ("avx512f",), "HASWELL": ("avx2", "fma"), "ZEN": ("avx2", "fma"),
    "SANDYBRIDGE": ("avx",),
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_mismatch(lib: ctypes.CDLL) -> str | None:
    """Why this CPU cannot run the library's build target, or None when it can (or cannot tell)."""
    config = _describe(lib)["config"] or ""
    if "DYNAMIC_ARCH" in config:
        return None
    words = set(config.upper().split())
    target = next((t for t in _TARGET_FLAGS if t in words), None)
    flags = _cpu_flags()
    missing = [f for f in _TARGET_FLAGS.get(target, ()) if f not in flags] if flags else []
    if missing:
        return f"is built for {target} CPUs only and this CPU lacks {', '.join(missing)}"
    return None


def _open_with_sgemm(path: str) -> ctypes.CDLL:
    """Load `path` globally, but only if it really exports cblas_sgemm and can run on this CPU
    (else leave it local and unload it)."""
    local = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    if not hasattr(local, "cblas_sgemm"):
        raise OSError(f"{path} does not export cblas_sgemm")
    mismatch = _cpu_mismatch(local)
    if mismatch:
        import _ctypes

        _ctypes.dlclose(local._handle)
        raise OSError(f"{path} {mismatch}")
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
        "source": None,  # system | pip | OMINIX_BLAS | preloaded
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
        _status = _new_status(path=already, loaded=True, reason="already loaded in this process",
                              source="preloaded")
        _status.update(_describe(_handle))
        return _status
    if mlx_first:
        _status = _new_status(
            reason="mlx.core was imported before ominix, too late to swap its BLAS; "
            "import ominix first (or set LD_PRELOAD)",
        )
        return _status

    choice = requested.lower()
    if choice in ("system", "pip"):
        tries = [(p, choice) for p in (candidates() if choice == "system" else pip_candidates())]
    elif requested:
        tries = [(requested, "OMINIX_BLAS")]
    else:
        tries = [(p, "system") for p in candidates()] + [(p, "pip") for p in pip_candidates()]
    errors = []
    for path, source in tries:
        try:
            _handle = _open_with_sgemm(path)
        except OSError as e:
            errors.append(str(e))
            continue
        _status = _new_status(path=path, loaded=True, reason="loaded before mlx.core", source=source)
        _status.update(_describe(_handle))
        return _status
    _status = _new_status(reason=_failure(requested, choice, errors), install_hint=_hint(requested, choice, errors))
    return _status


def _failure(requested: str, choice: str, errors: list[str]) -> str:
    gfortran = any("libgfortran" in e for e in errors)
    if gfortran:
        return ("the cmeel-openblas wheel's OpenBLAS needs libgfortran.so.5, which this machine lacks "
                f"(install the libgfortran5 package: {GFORTRAN_HINT})")
    if choice == "pip" and errors:
        return f"the cmeel-openblas wheel cannot serve here: {'; '.join(errors)}"
    if choice == "system":
        return "no system OpenBLAS found" + (f" ({'; '.join(errors)})" if errors else "")
    if choice == "pip":
        return "the cmeel-openblas wheel is not installed" + (f" ({'; '.join(errors)})" if errors else "")
    if requested:
        return f"OMINIX_BLAS={requested} could not be loaded: {'; '.join(errors)}"
    return "no usable OpenBLAS found" + (f" ({'; '.join(errors)})" if errors else "")


def _hint(requested: str, choice: str, errors: list[str]) -> str | None:
    if any("libgfortran" in e for e in errors):
        return f"{INSTALL_HINT} (or, for the cmeel-openblas wheel, {GFORTRAN_HINT})"
    if requested and choice not in ("system", "pip"):
        return None
    return INSTALL_HINT


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


def _note_marker():
    from ominix import config

    return config.ominix_home() / "state" / "blas-note"


def warn_once_if_slow(stream=None) -> None:
    """Print slow_blas_hint() once per machine (and per hint): the first `run`/`serve`/`bench`
    says it, later ones do not; `ominix doctor` always does. Never on import."""
    global _hint_shown
    if _hint_shown:
        return
    hint = slow_blas_hint()
    if not hint:
        return
    _hint_shown = True
    marker = _note_marker()
    try:
        if marker.read_text(encoding="utf-8") == hint:
            return
    except OSError:
        pass
    print(hint + " (said once; `ominix doctor` shows it again)", file=stream or sys.stderr)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(hint, encoding="utf-8")
    except OSError:
        pass  # a read-only home: the note comes again next time, no harm
