"""An allow-list unpickler for NVlabs StyleGAN-2 network pickles (Karras et al. 2020, stylegan2-ada-pytorch format).

NVlabs pickles store every network as a ``torch_utils.persistence`` record whose reconstruction would ``exec`` the
embedded ``module_src``. `load_pickle` never runs it: `find_class` maps the few names such a file needs (tensor and
storage rebuilders, ``OrderedDict``, ``EasyDict``, numpy scalars/dtypes, the persistence reconstructor) to local,
side-effect-free functions, and refuses every other global (``posix.system``, ``builtins.eval``, ...) with
`UnsafePickleError` before anything is called. The BUILD opcode (``__setstate__`` / attribute assignment) is allowed
only on objects this load itself constructed (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST), never on an allow-listed class,
function or any other pre-existing object: otherwise a pickle could, e.g., replace ``EasyDict.__getattr__`` for the
whole process. Tensor storages are decoded with ``torch.load(weights_only=True)``.
What comes back is plain data: dicts, tensors and `ModuleRecord` objects (a class name plus the module's ``__dict__``).
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import struct
import warnings
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor


# ----------------------------------------------------------------------------
# The error raised for refused or unreadable pickles (a ValueError too, so the CLI prints it on one line).


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle needs a global that is not on the allow-list (or is not a pickle at all)."""


# ----------------------------------------------------------------------------
# A torch module rebuilt as data: class name and instance ``__dict__``; its code is never imported or run.


class ModuleRecord:
    """Stand-in for a pickled ``torch.nn.Module``: ``class_name`` and ``state`` (the module's ``__dict__``)."""

    class_name = "Module"

    def __init__(self, class_name: str = "Module", state: dict | None = None) -> None:
        self.class_name = class_name
        self.state = dict(state or {})

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}

    @property
    def init_kwargs(self) -> dict:
        """Constructor keyword arguments recorded by ``torch_utils.persistence`` (``{}`` when absent)."""
        kw = self.state.get("_init_kwargs", self.state.get("init_kwargs"))
        return dict(kw) if isinstance(kw, dict) else {}

    def state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """Flat ``{name: tensor}`` of parameters and persistent buffers, like ``nn.Module.state_dict``."""
        st = getattr(self, "state", {})
        skip = st.get("_non_persistent_buffers_set") or set()
        out: dict[str, Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, t in (st.get(group) or {}).items():
                if t is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(t, Tensor):
                    raise ValueError(f"{prefix}{name}: expected a tensor in {group}, got {type(t).__name__}")
                out[prefix + name] = t
        for name, sub in (st.get("_modules") or {}).items():
            if sub is None:
                continue
            if not isinstance(sub, ModuleRecord):
                raise ValueError(f"{prefix}{name}: expected a module record, got {type(sub).__name__}")
            out.update(sub.state_dict(f"{prefix}{name}."))
        return out

    def __repr__(self) -> str:
        return f"ModuleRecord({self.class_name!r}, keys={sorted(getattr(self, 'state', {}))[:6]}...)"


# ----------------------------------------------------------------------------
# ``dnnlib.util.EasyDict`` replacement: a dict with attribute access.


class EasyDict(dict):
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# ----------------------------------------------------------------------------
# Safe replacements for the globals an NVlabs pickle references.


def _reconstruct_persistent_obj(meta: Any) -> ModuleRecord:
    """``torch_utils.persistence`` record -> `ModuleRecord`; ``meta['module_src']`` is dropped, never executed."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        keys = sorted(meta) if isinstance(meta, dict) else "-"
        raise UnsafePickleError("persistent-object record: expected meta dict(type='class', state={...}), "
                                f"got {type(meta).__name__} with keys {keys}")
    return ModuleRecord(str(meta.get("class_name", "Module")), meta["state"])


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes``: a legacy ``torch.save`` of one storage, read with weights_only=True."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"storage payload: expected bytes, got {type(data).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *_ignored: Any) -> Tensor:
    """``torch._utils._rebuild_tensor_v2`` on a storage produced by `_load_storage`."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"tensor rebuild: expected a storage, got {type(storage).__name__}")
    untyped = storage._untyped_storage if isinstance(storage, torch.TypedStorage) else storage
    dtype = storage.dtype if isinstance(storage, torch.TypedStorage) else torch.uint8
    t = torch.empty(0, dtype=dtype)
    return t.set_(untyped, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, requires_grad: bool = False, *_ignored: Any) -> Tensor:
    """``torch._utils._rebuild_parameter[_with_state]``: parameters come back as plain tensors."""
    if not isinstance(data, Tensor):
        raise UnsafePickleError(f"parameter rebuild: expected a tensor, got {type(data).__name__}")
    return data


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` for numeric dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError(f"numpy scalar: only numeric dtypes are allowed, got {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_dtype(spec: Any, align: bool = False, copy: bool = True) -> np.dtype:
    """A fresh dtype (copy=True always): numpy's BUILD (``dtype.__setstate__``) must never reach the shared one."""
    if not isinstance(spec, str):
        raise UnsafePickleError(f"numpy dtype: expected a type string, got {type(spec).__name__}")
    return np.dtype(spec, copy=True)


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` for plain ndarrays (their data arrives via ``__setstate__``)."""
    if cls is not np.ndarray:
        raise UnsafePickleError(f"numpy array rebuild: only numpy.ndarray is allowed, got {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """Protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode: only (str, 'latin1') is allowed, got encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> ModuleRecord:
    """``copyreg._reconstructor`` for plain (non-persistent) torch modules only: an empty `ModuleRecord`."""
    if not (isinstance(cls, type) and issubclass(cls, ModuleRecord)) or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor: only torch.nn modules are allowed, got {cls!r}")
    return cls.__new__(cls)


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(m, "scalar"): _np_scalar for m in _NUMPY_CORE},
    **{(m, "_reconstruct"): _np_reconstruct for m in _NUMPY_CORE},
}
_RENAMED = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_module_classes: dict[str, type] = {}


# ----------------------------------------------------------------------------
# The unpickler: resolve globals through the allow-list only; BUILD only on objects made by this load.
# (The pure-Python ``pickle._Unpickler`` is used because its opcode table can be extended; the C one cannot.)


def _recording(opcode: bytes) -> Any:
    """Wrap a constructing opcode so that the object it pushes is marked as made by this load."""
    base = pickle._Unpickler.dispatch[opcode[0]]

    def load(self: SafeUnpickler) -> None:
        base(self)
        self._created.append(self.stack[-1])
        self._created_ids.add(id(self.stack[-1]))
    return load


def _load_build(self: SafeUnpickler) -> None:
    target = self.stack[-2]
    if isinstance(target, type) or id(target) not in self._created_ids:
        raise UnsafePickleError(f"refusing to set the state of {type(target).__name__} {target!r:.60}: BUILD is only "
                                "allowed on objects constructed by this pickle")
    pickle._Unpickler.dispatch[pickle.BUILD[0]](self)


class SafeUnpickler(pickle._Unpickler):
    dispatch = {**pickle._Unpickler.dispatch,
                **{op[0]: _recording(op) for op in (pickle.REDUCE, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ,
                                                    pickle.INST)},
                pickle.BUILD[0]: _load_build}

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self._created: list[Any] = []            # keeps the objects alive so their ids stay unique during the load
        self._created_ids: set[int] = set()

    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED.get(module, module)
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module.startswith("torch.nn.modules.") and name.isidentifier():   # plain torch modules -> records
            return _module_classes.setdefault(name, type(name, (ModuleRecord,), {"class_name": name}))
        raise UnsafePickleError(f"refusing to load {module}.{name}: only tensors, dicts and NVlabs persistent-object "
                                "records are allowed (this pickle would run code)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a persistent id: this looks like a torch.save file, not an NVlabs pickle")


# ----------------------------------------------------------------------------
# Load a pickle file (or binary stream) through `SafeUnpickler`.


def load_pickle(source: str | os.PathLike | BinaryIO) -> Any:
    """Unpickle ``source`` allowing only data (see module docstring); any refused global raises `UnsafePickleError`."""
    name = getattr(source, "name", source)
    try:
        if hasattr(source, "read"):
            return SafeUnpickler(source).load()
        with open(source, "rb") as f:
            return SafeUnpickler(f).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, IndexError, KeyError, ValueError,
            RuntimeError, struct.error) as e:
        raise UnsafePickleError(f"{name}: not a readable NVlabs pickle ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from None
