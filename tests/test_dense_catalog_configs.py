"""Every dense catalog LLM loads through the real loader from its published config.json.

tests/data/configs/<entry-id>.json holds a copy of the config each catalog entry downloads
(mlx-community's, with its `quantization` block; for minicpm-sala-9b the openbmb/MiniCPM-SALA
config with the 8-bit MLX block moxin-org's conversion adds). Each is shrunk to test size —
widths, head counts and layer count only; every structural option (biases, tied head, head_dim,
partial rotary, muP scales, mixer types, gates, norms, quantization bits and group size) is kept —
then a random checkpoint is written, quantized as the config says with our converter, and run.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from ominix.engine.llm.cache import make_cache
from ominix.engine.convert import convert
from ominix.engine.load import load_model
from ominix.models import ARCHITECTURES, get_architecture
from ominix.registry import load_catalog

CONFIGS = Path(__file__).parent / "data" / "configs"
DENSE_ENTRIES = ["qwen2-0.5b", "qwen2-7b", "qwen2-72b", "qwen3-0.6b", "qwen3-4b", "qwen3-8b",
                 "qwen3-14b", "qwen3-72b", "mistral-7b", "llama3.2-1b", "glm4-9b", "minicpm-sala-9b"]  # fmt: skip


def shrink(config: dict) -> dict:
    """The same architecture at test size: hidden 64, 4 heads of 16, 2 layers, vocab 256."""
    small = dict(config)
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads")
    small.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=256,
                 num_attention_heads=4)  # fmt: skip
    if kv is not None:
        small["num_key_value_heads"] = 4 if kv == heads else 2
    if config.get("head_dim"):
        small["head_dim"] = 16
    if "mixer_types" in config:  # one layer of each kind, in the published order
        small["mixer_types"] = config["mixer_types"][:2]
        small.update(lightning_nh=4, lightning_head_dim=16,
                     lightning_nkv=4 if config["lightning_nkv"] == config["lightning_nh"] else 2)
    return small


def write_random_float_checkpoint(path: Path, config: dict) -> Path:
    """Our module for `config` with random weights, saved under its (checkpoint) names."""
    arch = get_architecture(config["model_type"])
    float_config = {k: v for k, v in config.items()
                    if k not in ("quantization", "quantization_config")}  # fmt: skip
    model = arch.Model(arch.ModelArgs.from_dict(float_config))
    mx.random.seed(0)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.2 + (1.0 if p.ndim == 1 else 0),
                          model.parameters()))  # fmt: skip
    path.mkdir(parents=True)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (path / "config.json").write_text(json.dumps(float_config))
    return path


def test_catalog_routes_every_dense_entry_to_its_architecture():
    catalog = {entry.id: entry for entry in load_catalog().entries}
    for entry_id in DENSE_ENTRIES:
        config = json.loads((CONFIGS / f"{entry_id}.json").read_text())
        entry = catalog[entry_id]
        assert entry.architecture == config["model_type"], entry_id
        assert entry.architecture in ARCHITECTURES


@pytest.mark.parametrize("entry_id", DENSE_ENTRIES)
def test_published_config_loads_and_runs(tmp_path, entry_id):
    published = json.loads((CONFIGS / f"{entry_id}.json").read_text())
    config = shrink(published)
    src = write_random_float_checkpoint(tmp_path / "float", config)
    quantization = published.get("quantization")
    path = src
    if quantization:
        path = convert(src, tmp_path / "quantized", quantize=True, bits=quantization["bits"],
                       group_size=quantization["group_size"])  # fmt: skip
        (path / "config.json").write_text(json.dumps(config))  # the published spelling itself

    model, loaded = load_model(path)
    layer = model.layers[0].self_attn
    if quantization:
        assert loaded["_ominix"]["quantization"] == quantization
        assert isinstance(layer.q_proj, nn.QuantizedLinear)
        assert layer.q_proj.bits == quantization["bits"]
    ids = mx.array([[1, 5, 9, 200, 17, 3, 64, 99]])
    logits = model(ids)
    assert logits.shape == (1, 8, 256) and bool(mx.all(mx.isfinite(logits)))
    cache = make_cache(model)  # the cached path gives the same last-token logits
    model(ids[:, :5], cache=cache)
    last = None
    for t in range(5, 8):
        last = model(ids[:, t:t + 1], cache=cache)
    np.testing.assert_allclose(np.array(last[0, -1]), np.array(logits[0, -1]), rtol=1e-4, atol=1e-4)


def test_can_run_reads_the_table_without_importing_mlx():
    import subprocess
    import sys

    code = ("import sys; from ominix.models import can_run;"
            "from ominix.registry import load_catalog; c = load_catalog();"
            "print(can_run(c.get('minicpm-sala-9b')),"
            " can_run(type('E', (), {'architecture': 'no_such_arch'})()), 'mlx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_list_all_shows_which_entries_this_build_runs():
    from typer.testing import CliRunner

    from ominix.cli import app
    from ominix.models import ARCHITECTURES

    result = CliRunner().invoke(app, ["list", "--all", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)}
    for entry_id in DENSE_ENTRIES:
        assert rows[entry_id]["runnable"] is True
    catalog = load_catalog()
    for entry_id, row in rows.items():
        entry = catalog.get(entry_id)
        assert row["runnable"] == (entry.architecture in ARCHITECTURES)
    table = CliRunner().invoke(app, ["list", "--all"]).output
    assert "RUNS" in table.splitlines()[0]
