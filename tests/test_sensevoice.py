"""SenseVoice-Small vs funasr 1.4.16 on a tiny random checkpoint in FunAudioLLM/SenseVoiceSmall's
layout (config.yaml, am.mvn, model.pt, a SentencePiece .bpe.model with the tag pieces), and our
SentencePiece decoder vs the sentencepiece library."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("funasr")
spm = pytest.importorskip("sentencepiece")

import mlx.core as mx  # noqa: E402

from ominix.engine.audio.funasr import load_sensevoice  # noqa: E402
from ominix.engine.audio.spm import SentencePieceDecoder  # noqa: E402
from tests.funasr_checkpoints import SENSEVOICE_BPE, build_sensevoice, speechlike  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_sensevoice(tmp_path_factory.mktemp("sensevoice"), seed=1)


@pytest.fixture(scope="module")
def reference(checkpoint):
    from funasr import AutoModel

    return AutoModel(model=str(checkpoint), device="cpu", disable_update=True, disable_pbar=True,
                     disable_log=True)


@pytest.fixture(scope="module")
def ours(checkpoint):
    return load_sensevoice(checkpoint)


def test_sentencepiece_decoder_matches_the_library(checkpoint):
    library = spm.SentencePieceProcessor(model_file=str(checkpoint / SENSEVOICE_BPE))
    ours = SentencePieceDecoder.from_file(checkpoint / SENSEVOICE_BPE)
    assert len(ours) == library.get_piece_size()
    assert [ours.piece(i) for i in range(len(ours))] == [library.id_to_piece(i) for i in range(len(ours))]
    rng = random.Random(0)
    for _ in range(3000):
        ids = [rng.randrange(len(ours)) for _ in range(rng.randint(0, 14))]
        assert ours.decode(ids) == library.decode(ids), ids
    for text in ("hello world", "你好世界 today", "<|en|><|NEUTRAL|>the quick fox"):
        assert ours.decode(library.encode(text)) == library.decode(library.encode(text))


@pytest.mark.parametrize("language,use_itn", [("auto", False), ("en", True), ("zh", False)])
def test_encoder_and_ctc_parity(reference, ours, language, use_itn):
    model = reference.model.eval()
    audio = speechlike(2.4, seed=3)
    feats = ours.features(audio)
    speech = torch.from_numpy(np.array(feats))
    with torch.no_grad():
        lid = model.embed(torch.LongTensor([[model.lid_dict[language]]]))
        style = model.embed(torch.LongTensor([[model.textnorm_dict["withitn" if use_itn else "woitn"]]]))
        event_emo = model.embed(torch.LongTensor([[1, 2]]))
        x = torch.cat((lid, event_emo, style, speech), dim=1)
        enc, _ = model.encoder(x, torch.tensor([x.shape[1]]))
        want = model.ctc.log_softmax(enc)
    got = ours.model(feats, language=language, use_itn=use_itn)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(np.array(got), want.numpy(), atol=2e-4, rtol=1e-4)
    assert np.array_equal(np.array(mx.argmax(got[0], axis=-1)), want[0].argmax(-1).numpy())


@pytest.mark.parametrize("seconds,seed,language", [(1.0, 4, "auto"), (3.1, 5, "en"), (5.7, 6, "ja")])
def test_end_to_end_text_matches_funasr(reference, ours, seconds, seed, language):
    audio = speechlike(seconds, seed=seed)
    want = reference.generate(input=audio, language=language)[0]["text"]
    out = ours.recognize(audio, None if language == "auto" else language)
    assert out["raw"] == want and out["ids"]
    segments, found = ours.transcribe_window(audio, offset=4.0, language=None if language == "auto" else language)
    stripped = out["text"]
    assert "<|" not in stripped
    if stripped:
        assert [s.text for s in segments] == [stripped]
        assert segments[0].start == 4.0 and segments[0].end == pytest.approx(4.0 + seconds)
    else:
        assert segments == []
    if language != "auto":
        assert found == language


def test_language_comes_from_the_tag(ours, monkeypatch):
    # A checkpoint that answers <|ko|> first: the detected language is read from that tag.
    tag = ours.decoder.pieces.index("<|ko|>")
    word = ours.decoder.pieces.index("▁hello") if "▁hello" in ours.decoder.pieces else tag + 100
    frames = np.full((1, 12, len(ours.decoder)), -30.0, dtype=np.float32)
    frames[0, 0, tag] = 0.0
    frames[0, 1:, word] = 0.0

    class Scripted:  # the real model's interface, answering fixed log-probabilities
        args = ours.model.args

        def __call__(self, feats, language="auto", use_itn=False):
            return mx.array(frames)

    monkeypatch.setattr(ours, "model", Scripted())
    segments, found = ours.transcribe_window(speechlike(0.5))
    assert found == "ko"
    assert segments[0].text == ours.decoder.decode([word]).strip()


def test_missing_tokenizer_is_a_clear_error(tmp_path, checkpoint):
    import shutil

    from ominix.engine.load import LoadError

    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy, ignore=shutil.ignore_patterns("*.model"))
    with pytest.raises(LoadError, match="SentencePiece"):
        load_sensevoice(copy)


def test_one_loader_for_every_funasr_directory(checkpoint, tmp_path):
    from ominix.engine.audio import funasr
    from ominix.engine.load import LoadError
    from ominix.models import can_run

    recognizer, tokenizer = funasr.load(checkpoint)
    assert isinstance(recognizer, funasr.SenseVoiceRecognizer) and tokenizer is None
    (tmp_path / "config.yaml").write_text("model: FsmnVADStreaming\n")
    with pytest.raises(LoadError, match="FsmnVADStreaming"):
        funasr.load(tmp_path)

    class Entry:
        architecture = "sensevoice"

    assert can_run(Entry())
