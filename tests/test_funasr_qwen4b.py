"""FunASR-Qwen4B (OminiX-MLX's funasr-qwen4b-mlx crate) against independent references on tiny
random weights in the crate's files: the adaptor against PyTorch's own nn.TransformerEncoderLayer
stack (post-norm, GELU: how the crate's adaptor was trained), in the crate's converted names and in
PyTorch's; the whole pipeline against funasr's SenseVoice encoder -> that torch adaptor ->
transformers' Qwen3ForCausalLM greedy on the same prompt embeddings."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("funasr")

import mlx.core as mx  # noqa: E402

from ominix.engine.audio.funasr_qwen4b import EOS, PROMPTS, load_funasr_qwen4b, loop_start  # noqa: E402
from ominix.models.funasr_qwen4b import Adaptor, AdaptorArgs, sanitize_adaptor  # noqa: E402
from tests.checkpoints import load_reference  # noqa: E402
from tests.funasr_checkpoints import build_sensevoice, speechlike  # noqa: E402

ENC, HID, OUT, HEADS, FFN, LAYERS = 32, 48, 64, 4, 96, 2  # the real ones: 512, 2048, 2560, 8, 8192, 4


class TorchAdaptor(torch.nn.Module):
    """The adaptor as its PyTorch training script defines it."""

    def __init__(self):
        super().__init__()
        self.input_proj = torch.nn.Linear(ENC, HID)
        layer = torch.nn.TransformerEncoderLayer(HID, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True)
        self.transformer = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.output_proj = torch.nn.Linear(HID, OUT)
        self.norm = torch.nn.LayerNorm(OUT)

    def forward(self, x):
        return self.norm(self.output_proj(self.transformer(self.input_proj(x))))


def crate_names(state: dict) -> dict:
    """What the crate's convert_weights.py writes: q/k/v split, layers.N.{q,k,v,out}_proj, linear1/2."""
    out = {}
    for name, w in state.items():
        name = name.replace("transformer.layers.", "layers.").replace(".self_attn.out_proj.", ".out_proj.")
        if "in_proj_" in name:
            stem, kind = name.split(".self_attn.")[0], "weight" if name.endswith("weight") else "bias"
            for part, piece in zip("qkv", w.chunk(3, dim=0)):
                out[f"{stem}.{part}_proj.{kind}"] = piece.contiguous()
            continue
        out[name] = w.contiguous()
    return out


@pytest.fixture(scope="module")
def torch_adaptor():
    torch.manual_seed(3)
    model = TorchAdaptor().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape) * (0.5 if p.ndim > 1 else 0.1) / (p.shape[-1] ** 0.5 if p.ndim > 1 else 1))
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return model


@pytest.mark.parametrize("spelling", ["crate", "torch"])
def test_adaptor_matches_torch_transformer_encoder(torch_adaptor, spelling):
    state = {k: v.detach() for k, v in torch_adaptor.state_dict().items()}
    weights = crate_names(state) if spelling == "crate" else state
    weights = sanitize_adaptor({k: mx.array(v.numpy()) for k, v in weights.items()})
    ours = Adaptor(AdaptorArgs.from_weights(weights, num_heads=HEADS))
    ours.load_weights(list(weights.items()), strict=True)
    x = np.random.default_rng(0).standard_normal((1, 37, ENC)).astype(np.float32)
    with torch.no_grad():
        want = torch_adaptor(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(ours(mx.array(x))), want, atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, torch_adaptor):
    """A funasr-qwen4b directory as the crate reads it (this tiny adaptor has 4 heads, the crate's 8)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("funasr-qwen4b")
    sensevoice = build_sensevoice(root / "sensevoice-src", seed=2, dims=ENC)
    state = torch.load(sensevoice / "model.pt", map_location="cpu", weights_only=True)
    out = root / "bundle"
    out.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "sensevoice_iic.safetensors"))
    save_file(crate_names({k: v.detach() for k, v in torch_adaptor.state_dict().items()}),
              str(out / "adaptor_phase3_final.safetensors"))
    _qwen3(out / "models" / "Qwen3-4B", root)
    return out, sensevoice


def _qwen3(path, root):
    """A tiny tied Qwen3 with large random weights (the fixture's default ones repeat one token)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.checkpoints import _tokenizer_files, tiny_config
    from tests.funasr_checkpoints import randomize

    torch.manual_seed(4)
    model = Qwen3ForCausalLM(Qwen3Config(**tiny_config("qwen3", tied=True))).eval()
    randomize(model, 4, scale=2.0)
    model.save_pretrained(path)
    for item in _tokenizer_files("qwen3", root).iterdir():
        shutil.copy2(item, path / item.name)


@pytest.fixture(scope="module")
def ours(bundle):
    return load_funasr_qwen4b(bundle[0], adaptor_heads=HEADS)


@pytest.mark.parametrize("task,seed", [("transcribe", 7), ("translate", 8)])
def test_pipeline_matches_funasr_torch_adaptor_and_transformers(bundle, ours, torch_adaptor, task, seed, monkeypatch):
    """The greedy stream of 30 tokens (the loop cut, which a random model trips at once, is off
    on both sides here and checked on its own below)."""
    import ominix.engine.audio.funasr_qwen4b as engine
    from funasr import AutoModel

    monkeypatch.setattr(engine, "loop_start", lambda tokens: None)
    _, sensevoice = bundle
    audio = speechlike(2.6, seed=seed)
    got = ours.generate(audio, task)
    before, frames, after = got["prompt"]
    assert before == ours.tokenizer.encode(PROMPTS[task][0]) and after == ours.tokenizer.encode(PROMPTS[task][1])

    funasr = AutoModel(model=str(sensevoice), device="cpu", disable_update=True, disable_pbar=True, disable_log=True)
    llm = load_reference(bundle[0] / "models" / "Qwen3-4B")
    feats = torch.from_numpy(np.array(ours.features(audio)))
    assert feats.shape[1] == frames
    with torch.no_grad():
        encoded, _ = funasr.model.eval().encoder(feats.clone(), torch.tensor([frames]))  # it scales in place
        adapted = torch_adaptor(encoded)
        np.testing.assert_allclose(np.array(ours.audio_model(mx.array(feats.numpy()))), adapted.numpy(), atol=2e-4, rtol=1e-3)
        embed = llm.get_input_embeddings()
        h = torch.cat([embed(torch.tensor([before])), adapted, embed(torch.tensor([after]))], dim=1)
        want = []
        logits = llm(inputs_embeds=h, use_cache=True)
        for _ in range(30):  # 2.6 s: the budget is the 30-token floor
            token = int(logits.logits[0, -1].argmax())
            if token in EOS or token in ours.eos:
                break
            want.append(token)
            logits = llm(inputs_embeds=embed(torch.tensor([[token]])), past_key_values=logits.past_key_values,
                         use_cache=True)
    assert len(want) > 10 and len(set(want)) > 2
    assert got["tokens"] == want


def test_looping_tails_are_cut_like_the_crate():
    assert loop_start([1, 2, 3]) is None
    assert loop_start([5, 7, 7, 7]) == 1  # one token three times: all copies go
    assert loop_start([5, 7, 8, 7, 8]) is None  # two tokens need three copies
    assert loop_start([4, 1, 2, 3, 1, 2, 3]) == 1  # three tokens twice
    assert loop_start([9, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == 1


def test_missing_files_are_clear_errors(bundle, tmp_path):
    from ominix.engine.load import LoadError

    copy = tmp_path / "partial"
    shutil.copytree(bundle[0], copy)
    (copy / "adaptor_phase3_final.safetensors").unlink()
    with pytest.raises(LoadError, match="no adaptor"):
        load_funasr_qwen4b(copy)


def test_the_asr_loader_knows_the_bundle_by_its_files(bundle):
    from ominix.engine.audio import asr
    from ominix.engine.audio.funasr_qwen4b import FunASRQwen4BRecognizer

    assert asr.model_type(bundle[0]) == "funasr_qwen4b"
    recognizer, _ = asr.load(bundle[0])  # the crate's 8 adaptor heads
    assert isinstance(recognizer, FunASRQwen4BRecognizer)
    assert recognizer.audio_model.adaptor.layers[0].heads == 8


def test_qwen3_4b_comes_from_the_required_entry_when_not_inside(bundle, tmp_path, monkeypatch):
    """`ominix pull funasr-qwen4b` puts the adaptor repo and its `requires` (qwen3-4b) in the HF
    cache side by side; the loader finds the LLM there, and says what to pull when it is not."""
    from ominix.engine.load import LoadError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    adaptor_only = tmp_path / "adaptor-repo"
    shutil.copytree(bundle[0], adaptor_only, ignore=shutil.ignore_patterns("models"))
    with pytest.raises(LoadError, match=r"'qwen3-4b' entry is not installed \(`ominix pull qwen3-4b`\)"):
        load_funasr_qwen4b(adaptor_only)
    repo = tmp_path / "hf" / "models--mlx-community--Qwen3-4B-8bit"
    shutil.copytree(bundle[0] / "models" / "Qwen3-4B", repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    recognizer = load_funasr_qwen4b(adaptor_only)
    inside = load_funasr_qwen4b(bundle[0])
    audio = speechlike(1.5, seed=3)
    assert recognizer.generate(audio, "transcribe")["tokens"] == inside.generate(audio, "transcribe")["tokens"]
