"""Getting weights and knowing what is installed; imports no MLX.

`sources.py` turns a name into a download source (HF, ModelScope, URL, manual), `download.py`
plans, checks disk, fetches resumably and verifies, `store.py` lists, locates (`locate`: the one
name resolver), verifies and removes installed models.
"""
