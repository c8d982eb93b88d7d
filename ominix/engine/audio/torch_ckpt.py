"""Read PyTorch `.ckpt` / `.pth` files (torch.save's zip format) without torch, once, to convert them.

GPT-SoVITS ships its GPT as a Lightning-style `{"weight": state_dict, "config": {...}}` and its
SoVITS generator as a `.pth`; `load(path)` returns the same nested Python object with every tensor
as a numpy array. Only tensors, containers and plain values are rebuilt: any other class in the
pickle is refused (a checkpoint is data, and unpickling arbitrary classes would run code).
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

_STORAGES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "BFloat16Storage": "bfloat16",
}  # fmt: skip


class CheckpointError(ValueError):
    pass


def _rebuild_tensor(storage, offset, size, stride, *_):
    data, _dtype = storage
    if not size:
        return data[offset : offset + 1].reshape(())
    itemsize = data.dtype.itemsize
    return np.lib.stride_tricks.as_strided(data[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride)).copy()  # fmt: skip


def _rebuild_parameter(tensor, *_):
    return tensor


class HParams(dict):
    """GPT-SoVITS' `utils.HParams` (the training config some `.pth` files pickle): read as a dict."""

    def __setstate__(self, state):
        self.update(state)


def _reconstruct(cls, base, state):  # copyreg._reconstructor, for HParams only
    if cls is not HParams:
        raise CheckpointError(f"checkpoint rebuilds a {cls}, which is not plain data")
    return cls()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.loaded: dict[str, tuple] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name == "Size":
            return tuple
        if name == "HParams" and module in ("utils", "GPT_SoVITS.utils"):
            return HParams
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstruct
        if (module, name) in (("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice")):
            return getattr(__import__("builtins"), name)
        raise CheckpointError(f"checkpoint holds a {module}.{name}, which is not plain data")

    def persistent_load(self, pid):
        kind, storage_type, key = pid[0], pid[1], pid[2]
        if kind != "storage":
            raise CheckpointError(f"unknown persistent id {kind!r}")
        name = storage_type if isinstance(storage_type, str) else getattr(storage_type, "__name__", str(storage_type))
        if key not in self.loaded:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            dtype = _STORAGES.get(name)
            if dtype is None:
                raise CheckpointError(f"unsupported tensor storage {name}")
            if dtype == "bfloat16":  # numpy has none: widen to float32 exactly
                data = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                data = np.frombuffer(raw, dtype)
            self.loaded[key] = (data, dtype)
        return self.loaded[key]


def load(path):
    """`path`: a file name, or a binary file object (a checkpoint whose head was patched in memory)."""
    name = path if hasattr(path, "read") else Path(path)
    try:
        archive = zipfile.ZipFile(name)
    except zipfile.BadZipFile:
        raise CheckpointError(f"{name} is not a torch.save zip checkpoint (legacy pickles are not read)") from None
    with archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise CheckpointError(f"{name} has no data.pkl")
        with archive.open(pkl) as f:
            return _Unpickler(f, archive, pkl.rsplit("/", 1)[0]).load()
