"""`ominix doctor`: the report's fields, and seed 004's device-compatibility verdicts (RAM, disk,
platform) for catalog entries, checked through the real CLI with a user overlay catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

from typer.testing import CliRunner

from ominix import doctor
from ominix.cli import app

GIB = 1024**3


def overlay_entry(entry_id: str, memory_gb: float, size_bytes: int, platforms=None) -> dict:
    runtime = {"api_type": "chat_completions", "api_model_id": entry_id, "memory_gb": memory_gb}
    if platforms is not None:
        runtime["platforms"] = platforms
    return {
        "id": entry_id,
        "name": entry_id,
        "description": "doctor test entry",
        "category": "llm",
        "source": {"kind": "hugging_face", "repo_id": f"doctor-test/{entry_id}"},
        "storage": {
            "local_path": f"~/.cache/huggingface/hub/models--doctor-test--{entry_id}",
            "size_bytes": size_bytes,
            "size_display": f"{size_bytes} B",
        },
        "runtime": runtime,
        "ui": {"panel_type": "llm_chat"},
    }


def machine():
    ram = doctor.memory()
    return ram, ram["total_bytes"] / GIB


def test_memory_and_disk_are_real_numbers(tmp_path):
    ram = doctor.memory()
    assert ram["total_bytes"] > 256 * 1024**2
    assert 0 < ram["available_bytes"] <= ram["total_bytes"]
    # free space is measured on the nearest existing parent of a store that is not created yet
    assert doctor.disk_free(tmp_path / "not" / "yet") == doctor.disk_free(tmp_path)


def test_check_entry_verdicts():
    ram, total_gb = machine()
    tags = doctor.machine_platforms()
    free = 100 * GIB

    def check(memory_gb, size, platforms=None, installed=()):
        entry = SimpleNamespace(
            id="m", runtime={"memory_gb": memory_gb, "platforms": platforms}, storage={"size_bytes": size}
        )
        return doctor.check_entry(entry, ram, free, set(installed), tags)

    small = check(0.01, GIB)
    assert (small["verdict"], small["ram"], small["disk"], small["platform"]) == ("ok", "ok", "ok", "ok")
    assert check(total_gb * 0.9, GIB)["ram"] == "tight"
    assert check(total_gb * 2, GIB)["verdict"] == "too big"
    assert check(0.01, 95 * GIB)["disk"] == "tight"  # fits, but leaves under 10% free
    assert check(0.01, 200 * GIB)["disk"] == "too big"
    assert check(0.01, 200 * GIB, installed=["m"])["disk"] == "ok"  # already on disk: needs nothing
    other = check(0.01, GIB, platforms=["some_other_os"])
    assert other["verdict"] == "unsupported" and other["platform"] == "unsupported"
    assert check(0.01, GIB, platforms=[tags[0].upper()])["platform"] == "ok"
    apple = check(0.01, GIB, platforms=["apple_silicon"])
    if "apple_silicon" in tags:
        assert apple["platform"] == "ok"
    elif "linux" in tags:  # MLX checkpoints run on MLX's CPU backend here
        assert (apple["platform"], apple["verdict"]) == ("cpu fallback", "ok")


def test_doctor_json_reports_machine_store_blas_and_catalog(tmp_path, monkeypatch):
    ram, total_gb = machine()
    overlay = tmp_path / "overlay.json"
    entries = [
        overlay_entry("doctor-small", 0.01, 1024),
        overlay_entry("doctor-tight", round(total_gb * 0.9, 2), 1024),
        overlay_entry("doctor-huge", round(total_gb * 4, 2), 1024),
        overlay_entry("doctor-elsewhere", 0.01, 1024, platforms=["some_other_os"]),
        overlay_entry("doctor-nodisk", 0.01, 1 << 60),
    ]
    overlay.write_text(json.dumps({"version": "1.0.0", "models": entries}))
    monkeypatch.setenv("OMINIX_REGISTRY", str(overlay))
    monkeypatch.setenv("OMINIX_HOME", str(tmp_path / "home"))

    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)

    assert report["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["versions"]["mlx"] and report["backend"]["mlx_version"] == report["versions"]["mlx"]
    assert report["backend"]["device"].startswith("Device(")
    assert isinstance(report["backend"]["metal_available"], bool)
    assert report["blas"]["platform"] == sys.platform and "loaded" in report["blas"]
    assert report["machine"]["ram_total_bytes"] == ram["total_bytes"]
    assert report["store"]["models_dir"] == str(tmp_path / "home" / "models")
    assert report["store"]["free_bytes"] > 0

    assert report["compatibility"]["error"] is None, report["compatibility"]["error"]
    verdicts = {m["id"]: m for m in report["compatibility"]["models"]}
    assert verdicts["doctor-small"]["verdict"] == "ok"
    assert verdicts["doctor-tight"]["verdict"] == "tight"
    assert verdicts["doctor-huge"]["verdict"] == "too big" and verdicts["doctor-huge"]["ram"] == "too big"
    assert verdicts["doctor-elsewhere"]["verdict"] == "unsupported"
    assert verdicts["doctor-nodisk"]["disk"] == "too big"
    # the shipped catalog is checked too, not only the overlay, with whether this build runs it
    assert len(verdicts) > len(entries)
    assert verdicts["qwen3-0.6b"]["runs_in_this_build"] is True
    assert verdicts["gpt-sovits"]["runs_in_this_build"] is True
    assert verdicts["funasr-qwen4b"]["runs_in_this_build"] is False  # no module for its architecture yet

    text = CliRunner().invoke(app, ["doctor"])
    assert text.exit_code == 0, text.output
    assert "BLAS" in text.output and "doctor-huge" in text.output and "too big" in text.output


def test_doctor_reports_disabled_blas_in_a_fresh_process():
    env = dict(os.environ, OMINIX_BLAS="off")
    proc = subprocess.run(
        [sys.executable, "-m", "ominix", "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["blas"]["loaded"] is False and report["blas"]["path"] is None
    if sys.platform.startswith("linux"):
        assert report["blas"]["reason"] == "disabled by OMINIX_BLAS=off"
        assert any("OMINIX_BLAS=off" in note for note in report["advice"])
