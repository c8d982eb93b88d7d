"""Read PyTorch checkpoints (`torch.save`'s zip format) into numpy arrays, without torch.

FunASR publishes `model.pt`; `pull` converts it once to `model.safetensors` so that nothing at
run time needs torch. The zip holds `<root>/data.pkl` (a pickle whose tensors are persistent ids
pointing at raw storages) and `<root>/data/<key>` (each storage's bytes, little endian). We
unpickle with a restricted Unpickler that knows only the few globals a state dict uses, so a
checkpoint cannot run code. Imports no MLX and no torch.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

# torch storage class names -> numpy dtype. bfloat16 has no numpy dtype: it is read as uint16
# and widened to float32 (exact) so the converted file stays loadable everywhere.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {  # torch.<dtype> objects pickled inside typed-storage ids (newer torch)
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": "bfloat16",
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_,
}


class TorchCheckpointError(Exception):
    pass


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _Storage:
    """A storage's bytes, viewed as its element type when a tensor asks for them."""

    def __init__(self, raw: bytes, dtype):
        self.raw, self.dtype = raw, dtype

    def array(self) -> np.ndarray:
        if self.dtype == "bfloat16":
            half = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
            return half.view(np.float32)
        return np.frombuffer(self.raw, dtype=np.dtype(self.dtype).newbyteorder("<"))


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored) -> np.ndarray:
    flat = storage.array()
    if len(size) == 0:
        return flat[offset:offset + 1].reshape(()).copy()
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=None, hooks=None, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.archive, self.root, self.cache = archive, root, {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(_TORCH_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(np.uint8)
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "dict", "list", "tuple"):
            return getattr(__import__("builtins"), name)
        raise TorchCheckpointError(f"checkpoint needs {module}.{name}, which a plain state dict does not use")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise TorchCheckpointError(f"unknown persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self.cache:
            raw = self.archive.read(f"{self.root}/data/{key}")
            self.cache[key] = _Storage(raw, storage_type.dtype)
        return self.cache[key]


def load(path: str | Path) -> dict:
    """The unpickled object of a torch zip checkpoint, with every tensor as a numpy array."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise TorchCheckpointError(
            f"{path.name} is not a torch zip checkpoint (saved by torch < 1.6, or not a checkpoint)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise TorchCheckpointError(f"{path.name} has no data.pkl")
        root = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as f:
            return _Unpickler(f, archive, root).load()


def state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The flat name -> array map of a checkpoint (unwraps {'state_dict': ...} / {'model': ...})."""
    obj = load(path)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise TorchCheckpointError(f"{Path(path).name} does not hold a state dict")
    out = {}
    for name, value in obj.items():
        if isinstance(value, np.ndarray):
            out[str(name)] = value
    return out


def convert_to_safetensors(src: str | Path, dst: str | Path) -> Path:
    """Write a checkpoint's tensors to safetensors (atomically); names and shapes unchanged."""
    from safetensors.numpy import save_file

    src, dst = Path(src), Path(dst)
    tensors = {k: np.ascontiguousarray(v) for k, v in state_dict(src).items()}
    tmp = dst.with_name(dst.name + ".partial")
    save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": src.name})
    tmp.chmod(0o644)  # like the downloaded files next to it
    tmp.replace(dst)
    return dst


def convert_dir(directory: str | Path) -> Path | None:
    """Convert a FunASR-style `model.pt` next to it once; return the safetensors file if any."""
    directory = Path(directory)
    src, dst = directory / "model.pt", directory / "model.safetensors"
    if dst.exists():
        return dst
    if not src.exists():
        return None
    return convert_to_safetensors(src, dst)
