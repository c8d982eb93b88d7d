"""Test-wide setup.

Every test runs against a private OMINIX_HOME and Hugging Face cache so nothing touches the user's
real store, and `ominix` is imported before anything imports `mlx.core` so the BLAS preload (see
ominix/_blas.py) applies to the whole suite exactly as it does for the CLI and the server.
"""

import os
import tempfile

_root = tempfile.mkdtemp(prefix="ominix-tests-")
os.environ.setdefault("OMINIX_HOME", os.path.join(_root, "home"))
os.environ.setdefault("HF_HOME", os.path.join(_root, "hf"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import ominix  # noqa: E402,F401  (must precede any mlx import)

import pytest  # noqa: E402


@pytest.fixture
def disk_full_on_second_write(monkeypatch):
    """mx.save_safetensors fails with ENOSPC on its second call (the first writes); returns the
    list of paths it was called with."""
    import mlx.core as mx

    calls, save = [], mx.save_safetensors

    def disk_full(path, arrays, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        save(path, arrays, metadata=metadata)

    monkeypatch.setattr(mx, "save_safetensors", disk_full)
    return calls
