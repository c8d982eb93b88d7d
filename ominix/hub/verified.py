"""Remembered verification: results of `verify` kept in ominix_home()/state/verified.json against a
fingerprint of the files' sizes and mtimes, so `ominix list` can show "verified" without
re-hashing gigabytes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ominix import config
from ominix.hub.files import files_under


def state_path() -> Path:
    return config.ominix_home() / "state" / "verified.json"


def load_state() -> dict:
    try:
        data = json.loads(state_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def fingerprint(folder: Path) -> str:
    h = hashlib.sha1()
    for p in files_under(folder):
        try:
            st = p.stat()
            h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p.relative_to(folder)}\0missing\n".encode())
    return h.hexdigest()


def remembered(state: dict, folder: Path) -> bool | None:
    record = state.get(str(folder))
    if isinstance(record, dict) and record.get("fingerprint") == fingerprint(folder):
        return bool(record.get("ok"))
    return None


def save_state(state: dict) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remember(folder: Path, ok: bool) -> None:
    state = load_state()
    state[str(folder)] = {"ok": ok, "fingerprint": fingerprint(folder), "checked_at": int(time.time())}
    save_state(state)


def forget_under(root: Path) -> None:
    state = load_state()
    kept = {k: v for k, v in state.items() if not Path(k).is_relative_to(root)}
    if len(kept) != len(state):
        save_state(kept)
