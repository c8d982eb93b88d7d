"""Reference packages whose pins clash with ours get their own venv, built once and cached.

`reference_python(name, requirements)` returns the interpreter of
~/.cache/ominix-test-venvs/<name>-<hash of the requirements>/, building it on first use: into a
temporary sibling directory, renamed into place only when every install succeeded, under a file
lock so that parallel test processes build it once. A broken half-built venv is never reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(os.environ.get("OMINIX_TEST_VENVS", Path.home() / ".cache" / "ominix-test-venvs"))


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def reference_python(name: str, requirements: list[str], no_deps: list[str] = ()) -> Path:
    """`requirements` install with their dependencies, then `no_deps` without (packages whose
    declared dependencies we replace or stub)."""
    spec = "\n".join(sorted(requirements)) + "\n--no-deps\n" + "\n".join(sorted(no_deps)) + sys.version
    digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
    target = ROOT / f"{name}-{digest}"
    python = target / "bin" / "python"
    if python.exists():
        return python
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists():  # another process built it while we waited
            return python
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=ROOT))
        try:
            _run([sys.executable, "-m", "venv", str(tmp)])
            pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            _run(pip + list(requirements))
            if no_deps:
                _run(pip + ["--no-deps"] + list(no_deps))
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return python
