"""Reading a ``torch.package`` model archive without executing any of its code.

``torch.package.PackageImporter`` (what audiotools' ``BaseModel.load`` uses) runs
the archive's pickles with real imports, so a crafted archive can call anything
(``os.system``...). Here the archive is read as a plain zip and its pickles are
unpickled by ``RestrictedUnpickler``:

* every global a pickle names (classes, functions: ``dac.model.dac.DAC``,
  ``torch.nn.Conv1d``, ``os.system``...) resolves to an inert stand-in: a fresh
  ``Stub`` subclass whose construction and ``__setstate__`` only record their
  arguments; no module is imported and no named function is ever called;
* the only real callables handed out are a small allow-list: ``set``,
  ``frozenset``, ``collections.OrderedDict``, and our own argument-checking
  versions of torch's tensor rebuild functions (``torch._utils._rebuild_tensor``,
  ``_rebuild_tensor_v2``, ``_rebuild_parameter``, ``_rebuild_parameter_with_state``,
  ``torch._tensor._rebuild_from_type_v2``), which build a tensor from a storage and
  drop hooks and state;
* torch storage types (``torch.FloatStorage``...) resolve to dtype markers, and
  ``persistent_load`` turns ``("storage", type, key, location, numel)`` records into
  tensors read from the archive's ``.data/<key>.storage`` entries. Other persistent
  records (``reduce_package``, which would call a packaged function) become stubs.

``module_state_dict`` then walks the reconstructed module tree (``_parameters``,
``_buffers``, ``_modules`` of the stubs' recorded state) into a state dict.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import sys
import zipfile
from typing import Any, Callable

import torch

_MANGLE = re.compile(r"^<torch_package_\d+>\.")   # names of re-saved packaged modules
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_STORAGE_KEY = re.compile(r"^[A-Za-z0-9_]+$")


class UnsafeOrInvalidArchive(ValueError):
  """The archive is not a readable torch.package model archive."""


class Stub:
  """Inert stand-in for anything a pickle names; records how it was built."""
  stub_module = ""
  stub_name = ""

  def __new__(cls, *args, **kwargs):
    inst = object.__new__(cls)
    object.__setattr__(inst, "stub_args", (args, kwargs))
    object.__setattr__(inst, "stub_state", None)
    object.__setattr__(inst, "stub_items", [])
    return inst

  def __init__(self, *args, **kwargs):   # pylint: disable=unused-argument
    pass

  def __setstate__(self, state):
    object.__setattr__(self, "stub_state", state)

  def __setitem__(self, key, value):     # SETITEM(S) on a stub: recorded, nothing run
    self.stub_items.append((key, value))

  def append(self, value):               # APPEND(S) on a stub
    self.stub_items.append((None, value))

  def extend(self, values):
    for value in values:
      self.append(value)

  def __repr__(self):
    return f"<stub {self.stub_module}.{self.stub_name}>"


def stub_dict(obj) -> dict | None:
  """The ``__dict__`` state a stub instance was given (``BUILD``), else None."""
  if not isinstance(obj, Stub):
    return None
  state = obj.stub_state
  if isinstance(state, tuple) and len(state) == 2:     # (dict state, slot state)
    merged = {}
    for part in state:
      if isinstance(part, dict):
        merged.update(part)
    return merged
  return state if isinstance(state, dict) else None


def stub_name(obj) -> str:
  if isinstance(obj, Stub):
    return f"{obj.stub_module}.{obj.stub_name}"
  return type(obj).__name__


class _Allowed:
  """An allow-listed callable; immutable, so a pickle's BUILD cannot alter it."""
  __slots__ = ("_fn", "_name")

  def __init__(self, fn, name):
    object.__setattr__(self, "_fn", fn)
    object.__setattr__(self, "_name", name)

  def __setattr__(self, key, value):
    raise AttributeError(f"{self._name} is read-only")

  def __call__(self, *args):
    return self._fn(*args)


class _StorageType:
  __slots__ = ("dtype",)

  def __init__(self, dtype):
    object.__setattr__(self, "dtype", dtype)

  def __setattr__(self, key, value):
    raise AttributeError("storage type markers are read-only")


def _ints(value, what) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) for v in value):
    raise pickle.UnpicklingError(f"tensor {what} must be a tuple of ints, got {value!r}")
  return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
  """torch._utils._rebuild_tensor(_v2) with checked arguments; hooks/metadata dropped."""
  if not isinstance(storage, torch.storage.TypedStorage):
    raise pickle.UnpicklingError(f"tensor storage must come from the archive, got "
                                 f"{stub_name(storage)}")
  if not isinstance(storage_offset, int) or storage_offset < 0:
    raise pickle.UnpicklingError(f"bad tensor storage offset {storage_offset!r}")
  t = torch.empty((0,), dtype=storage.dtype)
  return t.set_(storage._untyped_storage, storage_offset,  # pylint: disable=protected-access
                _ints(size, "size"), _ints(stride, "stride"))  # bounds-checked by torch


def _rebuild_parameter(data, requires_grad=False, *_ignored):
  if type(data) is not torch.Tensor:   # pylint: disable=unidiomatic-typecheck
    raise pickle.UnpicklingError(f"parameter data must be a tensor, got {stub_name(data)}")
  return torch.nn.Parameter(data, requires_grad=False)


_REBUILDERS: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


def _rebuild_from_type_v2(func, new_type, args, state):  # pylint: disable=unused-argument
  """Tensors with Python state are pickled through this: rebuild, drop type/state."""
  if not isinstance(func, _Allowed) or not isinstance(args, tuple):
    return Stub.__new__(_stub_type("torch._tensor", "_rebuild_from_type_v2"), func, args)
  return func(*args)


_REBUILDERS[("torch._tensor", "_rebuild_from_type_v2")] = _rebuild_from_type_v2
_CONTAINERS = {("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
               ("collections", "OrderedDict"): collections.OrderedDict,
               ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset}


def _stub_type(module: str, name: str) -> type:
  return type(f"Stub[{module}.{name}]", (Stub,), dict(stub_module=module, stub_name=name,
                                                         __slots__=()))


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles without importing or calling anything outside the allow-list."""

  def __init__(self, file, load_storage: Callable[[str, torch.dtype, int], Any]):
    super().__init__(file)
    self._load_storage = load_storage
    self._stubs: dict[tuple[str, str], type] = {}

  def find_class(self, module, name):
    module = _MANGLE.sub("", str(module))
    name = str(name)
    key = (module, name)
    if key in _CONTAINERS:
      return _CONTAINERS[key]
    if key in _REBUILDERS:
      return _Allowed(_REBUILDERS[key], f"{module}.{name}")
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if key not in self._stubs:
      self._stubs[key] = _stub_type(module, name)
    return self._stubs[key]

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":   # e.g. "reduce_package": would call packaged code; kept inert
      return Stub.__new__(self.find_class("<persistent>", str(kind)), *pid[1:])
    if len(pid) != 5:
      raise pickle.UnpicklingError(f"malformed storage record {pid!r}")
    _, storage_type, key, _location, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"storage record with unknown storage type "
                                   f"{stub_name(storage_type)}")
    key = key.decode("ascii") if isinstance(key, bytes) else key
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
      key = str(key)                     # torch.package numbers its storages
    if not isinstance(key, str) or not _STORAGE_KEY.match(key):
      raise pickle.UnpicklingError(f"malformed storage key {key!r}")
    if not isinstance(numel, int) or numel < 0:
      raise pickle.UnpicklingError(f"malformed storage size {numel!r}")
    untyped = self._load_storage(key, storage_type.dtype, numel)
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype,
                                      _internal=True)


class PackageArchive:
  """A torch.package zip read as data: records, and pickles via RestrictedUnpickler."""

  def __init__(self, path: str):
    self.path = path
    try:
      self._zip = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
      raise UnsafeOrInvalidArchive(f"{path}: not a zip archive ({e}).") from e
    names = self._zip.namelist()
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not all("/" in n for n in names):
      raise UnsafeOrInvalidArchive(f"{path}: not a torch.package archive (expected all "
                                   f"entries under one root folder).")
    self._prefix = roots.pop() + "/"
    self.records = [n[len(self._prefix):] for n in names]
    if ".data/version" not in self.records:
      raise UnsafeOrInvalidArchive(f"{path}: not a torch.package archive (no "
                                   f".data/version entry).")
    byteorder = self.read("byteorder").decode() if "byteorder" in self.records else "little"
    if byteorder != sys.byteorder:
      raise UnsafeOrInvalidArchive(f"{path}: tensors stored {byteorder}-endian, this "
                                   f"machine is {sys.byteorder}-endian.")
    self._storages: dict[str, torch.UntypedStorage] = {}

  def read(self, record: str) -> bytes:
    return self._zip.read(self._prefix + record)

  def close(self):
    self._zip.close()

  def _load_storage(self, key: str, dtype: torch.dtype, numel: int):
    if key not in self._storages:
      record = f".data/{key}.storage"
      if record not in self.records:
        raise pickle.UnpicklingError(f"tensor data {record} missing from the archive")
      raw = self.read(record)
      itemsize = torch.empty((), dtype=dtype).element_size()
      if len(raw) != numel * itemsize:
        raise pickle.UnpicklingError(f"{record}: {len(raw)} bytes, expected {numel} x "
                                     f"{itemsize}")
      self._storages[key] = (torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                             .untyped_storage() if raw else torch.UntypedStorage(0))
    return self._storages[key]

  def load_pickle(self, record: str) -> Any:
    """Unpickles ``record`` with ``RestrictedUnpickler`` (nothing is imported or run)."""
    unpickler = RestrictedUnpickler(io.BytesIO(self.read(record)), self._load_storage)
    return unpickler.load()


def module_state_dict(root) -> collections.OrderedDict:
  """The state dict of a stub module tree (as ``nn.Module.state_dict`` would give).

  Raises:
    ValueError: ``root`` is not a pickled ``nn.Module`` tree holding tensors.
  """
  out: collections.OrderedDict = collections.OrderedDict()
  seen: set[int] = set()

  def tensors(d: dict, field: str, where: str) -> dict:
    value = d.get(field, {})
    if not isinstance(value, dict):
      raise ValueError(f"module {where or '<root>'}: {field} is {stub_name(value)}, "
                       f"not a dict")
    return value

  def visit(mod, prefix: str, depth: int):
    if depth > 100 or id(mod) in seen:
      raise ValueError(f"module tree too deep or cyclic at {prefix!r}")
    seen.add(id(mod))
    d = stub_dict(mod)
    if d is None or "_modules" not in d or "_parameters" not in d:
      raise ValueError(f"{prefix.rstrip('.') or 'the root'} is {stub_name(mod)}, not a "
                       f"pickled torch.nn.Module")
    non_persistent = d.get("_non_persistent_buffers_set", set())
    non_persistent = non_persistent if isinstance(non_persistent, (set, frozenset)) else set()
    for field in ("_parameters", "_buffers"):
      for name, value in tensors(d, field, prefix).items():
        if value is None or (field == "_buffers" and name in non_persistent):
          continue
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
          raise ValueError(f"{prefix}{name} is {stub_name(value)}, not a tensor")
        out[prefix + str(name)] = value.detach()   # a fresh tensor: no hooks, no state
    for name, child in tensors(d, "_modules", prefix).items():
      if child is not None:
        visit(child, f"{prefix}{name}.", depth + 1)

  visit(root, "", 0)
  return out
