"""Running models; knows no HTTP.

`worker.py` is the one inference thread (stepped jobs of every kind), `pool.py` the resident
models, `load.py`/`compute.py`/`convert.py` files -> MLX modules, `embed.py` embeddings, `llm/` the
language-model specifics, `audio/` speech, `image/` image generation. Which kind a checkpoint is, and its loader, comes from
`ominix/kinds.py`.
"""
