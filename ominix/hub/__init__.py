"""Getting weights and knowing what is installed; imports no MLX.

`sources.py` turns a name into a download source (HF, ModelScope, URL, manual), `listing.py` lists
its files, `download.py` plans, checks disk and places, `fetch.py` fetches resumably and verifies
while the bytes stream. `store.py` lists, locates (`locate`: the one name resolver) and removes
installed models; `files.py` reads what a folder holds, `verify.py` checks it against its hashes,
`scan.py` imports folders already on disk.
"""
