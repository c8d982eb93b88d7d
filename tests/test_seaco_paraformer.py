"""SeACo-Paraformer (the catalog's funasr-paraformer) vs funasr 1.4.16 on a tiny random checkpoint
in the ModelScope layout (with seg_dict): hotword bias, CifPredictorV3 timestamps, text."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("funasr")

import mlx.core as mx  # noqa: E402

from ominix.engine.audio.funasr import load_paraformer  # noqa: E402
from ominix.models.seaco_paraformer import LSTM, ConvTranspose1d  # noqa: E402
from tests.funasr_checkpoints import build_seaco, speechlike  # noqa: E402

HOTWORDS = "你好 中国人 morning"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_seaco(tmp_path_factory.mktemp("seaco"), seed=2)


@pytest.fixture(scope="module")
def reference(checkpoint):
    from funasr import AutoModel

    return AutoModel(model=str(checkpoint), device="cpu", disable_update=True, disable_pbar=True,
                     disable_log=True)


@pytest.fixture(scope="module")
def ours(checkpoint):
    return load_paraformer(checkpoint)


def _load(module, torch_module):
    module.load_weights([(k, mx.array(v.detach().numpy())) for k, v in torch_module.state_dict().items()])


@pytest.mark.parametrize("layers,bidirectional", [(2, False), (1, True)])
def test_lstm_matches_torch(layers, bidirectional):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 5, layers, batch_first=True, bidirectional=bidirectional)
    ours = LSTM(6, 5, layers, bidirectional)
    _load(ours, ref)
    x = torch.randn(2, 7, 6)
    want, _ = ref(x)
    np.testing.assert_allclose(np.array(ours(mx.array(x.numpy()))), want.detach().numpy(), atol=1e-5)


def test_transposed_conv_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose1d(4, 6, 3, 3)
    ours = ConvTranspose1d(4, 6, 3)
    _load(ours, ref)
    x = torch.randn(1, 5, 4)
    want = ref(x.transpose(1, 2)).transpose(1, 2)
    np.testing.assert_allclose(np.array(ours(mx.array(x.numpy()))), want.detach().numpy(), atol=1e-5)


def test_hotword_decoding_parity(reference, ours):
    model = reference.model.eval()
    audio = speechlike(3.0, seed=0)
    feats = ours.features(audio)
    speech = torch.from_numpy(np.array(feats))
    lengths = torch.tensor([speech.shape[1]])
    hotwords = ours.hotword_ids(HOTWORDS)
    want_list = model.generate_hotwords_list(HOTWORDS, tokenizer=reference.kwargs["tokenizer"],
                                             frontend=reference.kwargs["frontend"])
    assert hotwords == want_list and hotwords[-1] == [1]
    with torch.no_grad():
        enc, enc_lens = model.encode(speech, lengths)
        embeds, token_num, _, _ = model.calc_predictor(enc, enc_lens)[:4]
        n = token_num.round().long()
        want = model._seaco_decode_with_ASF(enc, enc_lens, embeds, n, hw_list=want_list)
        plain = model._seaco_decode_with_ASF(enc, enc_lens, embeds, n, hw_list=None)
        _, _, us_alphas, us_peaks = model.calc_predictor_timestamp(enc, enc_lens, n)

    our_enc = ours.model.encode(feats)
    cif = ours.model.predict(our_enc)
    assert cif.token_num == int(n[0])
    got = ours.model.decode_with_hotwords(our_enc, cif, hotwords)
    np.testing.assert_allclose(np.array(got), want.numpy(), atol=2e-4)
    assert np.array_equal(np.array(mx.argmax(got[0], -1)), want[0].argmax(-1).numpy())
    np.testing.assert_allclose(np.array(ours.model.decode_with_hotwords(our_enc, cif, None)), plain.numpy(),
                               atol=2e-4)
    # the merge took the decoder's row where the hotword head said NO_BIAS, its own row elsewhere
    rows_from_decoder = np.all(np.isclose(np.array(got[0]), plain[0].numpy(), atol=1e-4), axis=-1)
    assert 0 < rows_from_decoder.sum() < rows_from_decoder.size

    alphas = ours.model.predictor.upsampled_alphas(our_enc, cif.token_num)
    np.testing.assert_allclose(np.array(alphas), us_alphas.numpy(), atol=1e-4)


@pytest.mark.parametrize("hotwords", [None, HOTWORDS, "世界 okay 不错"])
@pytest.mark.parametrize("seconds,seed", [(2.2, 1), (4.8, 3)])
def test_end_to_end_matches_funasr(reference, ours, hotwords, seconds, seed):
    audio = speechlike(seconds, seed=seed)
    want = reference.generate(input=audio, hotword=hotwords)[0]
    segments, language = ours.transcribe_window(audio, offset=2.0, prompt=hotwords, word_timestamps=True)
    assert language == "zh"
    words = want["text"].split(" ")  # with CifPredictorV3 FunASR always prints timed, spaced words
    if not segments:
        assert want["text"] == ""
        return
    seg = segments[0]
    assert seg.text.replace(" ", "") == want["text"].replace(" ", "")
    assert [w.word for w in seg.words] == words
    limit = round(seconds * 1000)
    assert [[round((w.start - 2) * 1000), round((w.end - 2) * 1000)] for w in seg.words] == [
        [min(s, limit), min(e, limit)] for s, e in want["timestamp"]]


def test_hotwords_change_the_result(ours):
    audio = speechlike(3.0, seed=0)
    assert ours.recognize(audio)["ids"] != ours.recognize(audio, hotwords=HOTWORDS)["ids"]
