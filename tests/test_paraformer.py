"""Paraformer: torch checkpoint reader, Kaldi fbank front end, model parity and end to end vs funasr.

The reference is funasr 1.4.16 on a tiny random Paraformer built from a ModelScope-style
config.yaml (tests/funasr_checkpoints.py); we load the same directory through the loader a download
uses (model.pt -> model.safetensors conversion included). The fbank reference is
kaldi-native-fbank, which funasr itself falls back to when torchaudio is absent (torchaudio's
wheels do not load with torch 2.13).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
funasr = pytest.importorskip("funasr")
knf = pytest.importorskip("kaldi_native_fbank")

import mlx.core as mx  # noqa: E402

from ominix.engine.audio import fbank as fb  # noqa: E402
from ominix.engine.audio.funasr import load_paraformer  # noqa: E402
from ominix.engine.audio.funasr_text import cif_timestamps, sentence  # noqa: E402
from ominix.hub import torch_pickle  # noqa: E402
from tests.funasr_checkpoints import PARAFORMER_TOKENS, build_paraformer, speechlike  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_paraformer(tmp_path_factory.mktemp("paraformer"), seed=3)


@pytest.fixture(scope="module")
def reference(checkpoint):
    from funasr import AutoModel

    return AutoModel(model=str(checkpoint), device="cpu", disable_update=True, disable_pbar=True,
                     disable_log=True)


@pytest.fixture(scope="module")
def ours(checkpoint):
    return load_paraformer(checkpoint)


# --- torch checkpoint reader ----------------------------------------------------------------------


def test_torch_pickle_reads_what_torch_save_writes(tmp_path):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    tensors = {
        "f32": torch.randn(3, 5, generator=gen), "f16": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(), "f64": torch.randn(3, generator=gen).double(),
        "i64": torch.arange(10), "i32": torch.arange(6, dtype=torch.int32).view(2, 3),
        "i8": torch.tensor([-3, 4], dtype=torch.int8), "u8": torch.tensor([250, 1], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5),
        "transposed": base.t(), "sliced": base[1:3, ::2], "row_of_shared": base[2],
    }
    layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.BatchNorm1d(3))
    torch.save(tensors, tmp_path / "plain.pt")
    torch.save({"state_dict": layer.state_dict()}, tmp_path / "wrapped.pt")

    got = torch_pickle.state_dict(tmp_path / "plain.pt")
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert np.array_equal(got[name], want), name

    module = torch_pickle.state_dict(tmp_path / "wrapped.pt")
    assert set(module) == set(layer.state_dict())
    for name, t in layer.state_dict().items():
        assert np.array_equal(module[name], t.numpy()), name

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(torch_pickle.TorchCheckpointError, match="not a torch zip"):
        torch_pickle.state_dict(tmp_path / "junk.pt")


def test_torch_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(2), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(torch_pickle.TorchCheckpointError, match=r"_?builtins?_*\.print"):
        torch_pickle.state_dict(tmp_path / "evil.pt")


# --- front end ------------------------------------------------------------------------------------


def _knf_fbank(audio: np.ndarray, window: str) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, (audio * 32768).tolist())
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])


@pytest.mark.parametrize("window", ["hamming", "povey", "hanning"])
def test_fbank_matches_kaldi_native_fbank(window):
    audio = speechlike(1.3, seed=1)
    ref = _knf_fbank(audio, window)
    ours = fb.fbank(audio, fb.FbankOptions(window=window))
    assert ours.shape == ref.shape == (128, 80)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)


def test_mel_banks_layout():
    # Kaldi's bins cover 20 Hz .. Nyquist: no weight on DC (0 Hz) or on the Nyquist bin, which
    # Kaldi's MelBanks leaves out; neighbouring triangles overlap and sum to 1 between centres.
    banks = fb.mel_banks(80, 512, 16000, 20.0, 0.0)
    assert banks.shape == (257, 80)
    assert banks[0].max() == 0 and banks[256].max() == 0 and banks.max() <= 1.0
    inner = banks[8:240].sum(axis=1)  # past the last centre only the falling edge is left
    np.testing.assert_allclose(inner, 1.0, atol=1e-5)


def test_frontend_matches_funasr_wavfrontend(checkpoint):
    from funasr.frontends.wav_frontend import WavFrontend

    conf = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
            "lfr_m": 7, "lfr_n": 6, "dither": 0.0}
    reference = WavFrontend(cmvn_file=str(checkpoint / "am.mvn"), **conf)
    for seconds in (0.5, 1.01, 2.37):
        audio = speechlike(seconds, seed=2)
        want, _ = reference(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
        got = fb.frontend(audio, fb.FbankOptions.from_frontend_conf(conf), fb.load_cmvn(checkpoint / "am.mvn"))
        assert got.shape == tuple(want.shape[1:])
        np.testing.assert_allclose(got, want[0].numpy(), atol=2e-3)


# --- model parity ---------------------------------------------------------------------------------


def test_paraformer_parity_stage_by_stage(reference, ours):
    model = reference.model.eval()
    audio = speechlike(3.2, seed=4)
    feats = ours.features(audio)
    speech = torch.from_numpy(np.array(feats))
    lengths = torch.tensor([speech.shape[1]])
    with torch.no_grad():
        enc, enc_lens = model.encode(speech, lengths)
        embeds, token_num, alphas, peaks = model.calc_predictor(enc, enc_lens)
        n = int(token_num.round().long()[0])
        logits = model.decoder(enc, enc_lens, embeds, torch.tensor([n]))[0]

    our_enc = ours.model.encode(feats)
    np.testing.assert_allclose(np.array(our_enc), enc.numpy(), atol=1e-4, rtol=1e-4)
    cif = ours.model.predict(our_enc)
    np.testing.assert_allclose(cif.alphas, alphas[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(cif.fires, peaks[0].numpy(), atol=1e-5)
    assert cif.token_num == n > 5
    ref_fires = np.nonzero(peaks[0].numpy() >= 1.0)[0]
    assert np.array_equal(cif.fire_frames, ref_fires)
    our_embeds = np.array(mx.array(cif.weights) @ our_enc[0])
    np.testing.assert_allclose(our_embeds, embeds[0, :n].numpy(), atol=1e-4)
    our_logits = ours.model.decode(our_enc, cif)
    np.testing.assert_allclose(np.array(our_logits), logits.numpy(), atol=2e-4, rtol=1e-4)
    assert np.array_equal(np.array(mx.argmax(our_logits[0], axis=-1)), logits[0].argmax(-1).numpy())


@pytest.mark.parametrize("seconds,seed", [(1.0, 5), (2.5, 6), (6.3, 7)])
def test_paraformer_end_to_end_matches_funasr(reference, ours, seconds, seed):
    audio = speechlike(seconds, seed=seed)
    plain = reference.generate(input=audio)[0]
    timed = reference.generate(input=audio, output_timestamp=True)[0]
    out = ours.recognize(audio)
    segments, language = ours.transcribe_window(audio, offset=10.0, word_timestamps=True)
    assert language == "zh" and len(segments) == 1
    seg = segments[0]
    assert seg.text == plain["text"] and seg.text
    assert [w.word for w in seg.words] == timed["text"].split(" ")
    assert [[round((w.start - 10) * 1000), round((w.end - 10) * 1000)] for w in seg.words] == [
        [min(s, round(seconds * 1000)), min(e, round(seconds * 1000))] for s, e in timed["timestamp"]]
    assert 10.0 <= seg.start <= seg.end <= 10.0 + seconds
    assert out["ids"] == [PARAFORMER_TOKENS.index(t) for t in out["tokens"]]


def test_audio_shorter_than_a_frame_gives_no_segment(ours):
    assert ours.transcribe_window(np.zeros(300, dtype=np.float32), language="en") == ([], "en")


# --- text rules -----------------------------------------------------------------------------------


def test_sentence_rules_match_funasr_on_random_token_runs():
    from funasr.utils.postprocess_utils import sentence_postprocess

    rng = random.Random(0)
    vocab = PARAFORMER_TOKENS[3:]
    for trial in range(400):
        tokens = [rng.choice(vocab) for _ in range(rng.randint(1, 14))]
        if trial % 3 == 0:  # all-Chinese and all-English runs take their own branches
            pool = [t for t in vocab if (t >= "\u4e00") == (trial % 2 == 0)]
            tokens = [rng.choice(pool) for _ in range(rng.randint(1, 10))]
        stamps = [[i * 60, i * 60 + 50] for i in range(len(tokens))]
        want_text, _ = sentence_postprocess(list(tokens))
        text, _, _ = sentence(list(tokens))
        assert text == want_text, tokens
        want_timed, want_stamps, want_words = sentence_postprocess(list(tokens), [list(s) for s in stamps])
        _, words, got_stamps = sentence(list(tokens), stamps)
        assert words == want_words and got_stamps == want_stamps, tokens


def test_cif_timestamps_match_funasr():
    from funasr.utils.timestamp_tools import ts_prediction_lfr6_standard

    rng = np.random.default_rng(0)
    for _ in range(50):
        frames = int(rng.integers(8, 120))
        alphas = (rng.random(frames) * 0.8).astype(np.float32)
        fires = alphas.copy()
        n = int(rng.integers(1, max(2, frames // 3)))
        tokens = ["中"] * n
        _, want = ts_prediction_lfr6_standard(torch.from_numpy(fires.copy()), torch.from_numpy(alphas.copy()),
                                              list(tokens), upsample_rate=1)
        assert cif_timestamps(fires, alphas, n) == want


# --- loading like a download ----------------------------------------------------------------------


def test_loader_converts_model_pt_once(tmp_path, checkpoint):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    assert not (copy / "model.safetensors").exists()
    first = load_paraformer(copy)
    converted = copy / "model.safetensors"
    assert converted.exists()
    stamp = converted.stat().st_mtime_ns
    (copy / "model.pt").unlink()  # from now on torch's file is not needed at all
    second = load_paraformer(copy)
    assert converted.stat().st_mtime_ns == stamp
    audio = speechlike(2.0, seed=9)
    assert first.recognize(audio)["ids"] == second.recognize(audio)["ids"]
    header = json.loads(converted.read_bytes()[8:8 + int.from_bytes(converted.read_bytes()[:8], "little")])
    assert "encoder.encoders0.0.self_attn.linear_q_k_v.weight" in header


def test_bad_directories_get_clear_errors(tmp_path, checkpoint):
    import shutil

    from ominix.engine.load import LoadError

    with pytest.raises(LoadError, match="config.yaml"):
        load_paraformer(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken, ignore=shutil.ignore_patterns("model.safetensors"))
    (broken / "model.pt").write_bytes(b"garbage")
    with pytest.raises(LoadError, match="model.pt"):
        load_paraformer(broken)


def test_pull_from_modelscope_converts_and_loads(tmp_path, monkeypatch, checkpoint):
    from ominix import config, registry
    from ominix.hub import download
    from tests.hubserver import FakeHub

    server = FakeHub().start()
    try:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        monkeypatch.setenv("OMINIX_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("OMINIX_MODELS", raising=False)
        monkeypatch.setenv("OMINIX_REGISTRY", str(tmp_path / "overlay.json"))
        files = {name: (checkpoint / name).read_bytes()
                 for name in ("configuration.json", "config.yaml", "model.pt", "am.mvn", "tokens.json")}
        server.add_ms_repo("iic/tiny-paraformer", files)
        entry = registry.make_custom_entry("tiny-paraformer", url="https://example.com/placeholder.bin")
        entry["source"] = {"kind": "model_scope", "repo_id": "iic/tiny-paraformer", "revision": "master"}
        entry["storage"]["local_path"] = str(config.models_dir() / "tiny-paraformer")
        registry.add_user_entry(entry)
        events = []
        folder = download.pull("tiny-paraformer", on_event=events.append)
    finally:
        server.stop()
    assert (folder / "model.safetensors").exists()
    assert any(e["event"] == "convert" for e in events)
    audio = speechlike(2.0, seed=11)
    assert load_paraformer(folder).recognize(audio)["ids"] == load_paraformer(checkpoint).recognize(audio)["ids"]
