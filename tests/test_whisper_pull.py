"""An mlx-community Whisper repository (config.json + weights.npz, no tokenizer) pulled from a
fake Hugging Face hub: `ominix pull` also fetches tokenizer.json from the matching openai repo, and
the checkpoint then loads and runs; the catalog's Whisper entries are runnable."""

from __future__ import annotations

import json


from tests.speech_fixtures import SENTENCES, resample_linear, speak
from tests.test_pull_cli import hub, ominix  # noqa: F401  (the fake hub fixture)
from tests.whisper_checkpoints import build_hf, hf_to_mlx_layout, tokenizer_file


def test_pull_fetches_the_tokenizer_and_the_model_runs(hub, tmp_path):  # noqa: F811
    build_hf(tmp_path / "hf", seed=5)
    mlx_dir = hf_to_mlx_layout(tmp_path / "hf", tmp_path / "mlx")
    (mlx_dir / "tokenizer.json").unlink()  # as mlx-community publishes it
    hub.add_hf_repo("mlx-community/whisper-test-mlx",
                    {p.name: p.read_bytes() for p in mlx_dir.iterdir()})
    hub.add_hf_repo("openai/whisper-tiny.en", {"tokenizer.json": tokenizer_file().read_bytes(),
                                               "model.safetensors": b"x" * 1000})
    result = ominix(hub, "pull", "mlx-community/whisper-test-mlx")
    assert result.returncode == 0, result.stderr
    # Only the tokenizer came from the openai repo, not its weights.
    assert not hub.sent_requests("model.safetensors")
    snapshot = hub.hf_cache / "models--mlx-community--whisper-test-mlx" / "snapshots"
    path = next(snapshot.iterdir())
    assert not (path / "tokenizer.json").exists()

    from ominix.engine.audio.whisper import load_whisper

    rec = load_whisper(path)
    assert rec.tok.sot == 50257
    speech, rate = speak(SENTENCES[0])
    segments, language, consumed = rec.transcribe_window(resample_linear(speech, rate, 16000))
    assert language == "en" and 0 < consumed <= 30  # random weights: any text, but it runs


def test_catalog_whisper_entries_run():
    from ominix.models import can_run
    from ominix.registry import load_catalog

    entries = [e for e in load_catalog().entries if e.architecture == "whisper"]
    assert {e.id for e in entries} >= {"whisper-tiny", "whisper-base", "whisper-large-v3-turbo"}
    assert all(can_run(e) and e.category == "asr" for e in entries)
    from ominix import kinds

    assert all(kinds.runs(kinds.detect(None, e)) for e in entries)
