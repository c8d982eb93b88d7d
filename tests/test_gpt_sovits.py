"""GPT-SoVITS v2's GPT (text -> semantic tokens) against gpt-sovits-cpufast 0.1.0 on a tiny random
checkpoint saved as the project saves its `.ckpt` (torch.save), converted here without torch.

The reference runs in its own venv (tests/gpt_sovits_venv.py: numpy < 2, its package installed
without its heavy dependencies). Compared: logits at every decode step (prefill with
phonemes + BERT features + the reference clip's semantic tokens, then one token at a time through
the KV cache) and the greedy tokens under the reference's repetition penalty and EOS rules.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ominix.engine.audio import torch_ckpt
from ominix.engine.audio.gpt_sovits import SemanticDecoder, convert_gpt, load_gpt
from tests import gpt_sovits_venv

HERE = Path(__file__).parent
CONFIG = {"model": {"hidden_dim": 64, "embedding_dim": 64, "head": 4, "n_layer": 3, "vocab_size": 129,
                    "phoneme_vocab_size": 80, "EOS": 128, "dropout": 0.0, "linear_units": 256},
          "data": {"max_sec": 54}}  # fmt: skip
PHONES = [3, 17, 42, 5, 9, 61, 77, 12, 30]
PROMPT = [5, 100, 7, 7, 64, 3]
MAX_TOKENS = 30
EOS_MIN = 11  # the reference allows EOS only after 11 tokens


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsv")
    python = gpt_sovits_venv.python()
    bert = np.random.default_rng(0).standard_normal((len(PHONES), 1024)).astype(np.float32)
    np.save(root / "bert.npy", bert)
    spec = {"seed": 0, "config": CONFIG, "ckpt": str(root / "s1-tiny.ckpt"), "results": str(root / "ref.npz"),
            "phones": PHONES, "prompt": PROMPT, "bert": str(root / "bert.npy"), "max_tokens": MAX_TOKENS}  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([str(python), str(HERE / "gpt_sovits_reference.py"), str(root / "spec.json")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return root, bert, dict(np.load(root / "ref.npz"))


def test_torch_free_checkpoint_reader(reference):
    root, _, _ = reference
    data = torch_ckpt.load(root / "s1-tiny.ckpt")
    assert data["config"] == CONFIG and data["info"] == "tiny random"
    w = data["weight"]["model.ar_predict_layer.weight"]
    assert w.shape == (129, 64) and w.dtype == np.float32


def test_gpt_logits_and_greedy_tokens_match_reference(reference, tmp_path):
    root, bert, ref = reference
    model = load_gpt(convert_gpt(root / "s1-tiny.ckpt", tmp_path / "gpt"))
    dec = SemanticDecoder(model, PHONES, bert, PROMPT, top_k=1, max_tokens=MAX_TOKENS, seed=0)
    dec.trace = []
    while dec.step() is not None:
        pass
    np.testing.assert_allclose(np.stack(dec.trace), ref["logits"], atol=2e-4, rtol=1e-4)
    assert PROMPT + dec.tokens == ref["tokens"].tolist()
    assert len(dec.tokens) > EOS_MIN
