"""Reading PyTorch checkpoint files without running any code they carry.

A released checkpoint is more than its state dict. MAE's `save_model` (jimmy-dq/DropMAE
`util/misc.py`) stores `{'model', 'optimizer', 'epoch', 'scaler', 'args'}` with `args` an
`argparse.Namespace`; OSTrack's trainer (jimmy-dq/DropTrack `lib/train/trainers/base_trainer.py`)
stores `{'epoch', 'actor_type', 'net_type', 'net', 'net_info', 'constructor', 'optimizer', 'stats',
'settings'}` with objects of the trainer's own classes (`lib.train.admin.settings.Settings`,
`lib.train.admin.stats.AverageMeter`). `torch.load(weights_only=True)` refuses both ("Unsupported
global"), and `weights_only=False` would import those modules and call whatever the pickle names.

`load(path)` reads such a file with its own unpickler:

* tensors (storages, `torch._utils._rebuild_*`, dtypes, `torch.Size`, ...: the globals that
  `torch.load(weights_only=True)` allows) and plain containers (dict, list, tuple, set,
  OrderedDict, str, numbers) are read as they are;
* any other global -- a class, a function, `os.system` -- becomes an inert placeholder: a class
  of ours named after the global. Its module is never imported and nothing it names is ever
  called; instances swallow their arguments and pickled state.

Formats: the zip format of `torch.save` (PyTorch >= 1.6, whatever the file's extension: `.pth`,
`.pth.tar`) and the legacy pickle-stream format (`_use_new_zipfile_serialization=False`, PyTorch
< 1.6). The tar format of the earliest PyTorch releases and TorchScript archives are refused with an
error.
"""
from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import io as _io
import pickle
import tarfile
import zipfile
from typing import Any

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c   # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL_VERSION = 1001                # torch.serialization.PROTOCOL_VERSION


class TorchFileError(ValueError):
  """A file that cannot be read as a PyTorch checkpoint (the message names the problem)."""


class Ignored:
  """An object of a pickled global that is not read: never imported, never called.

  Each global gets its own subclass (`placeholder_class`) whose `global_name` is the pickled
  'module.name'. Constructor arguments, `__setstate__` state and list/dict items are dropped.
  """
  global_name = "?"

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state

  def __setitem__(self, key, value):     # SETITEM(S) on a dict subclass
    del key, value

  def append(self, item):                # APPEND on a list subclass
    del item

  def extend(self, items):               # APPENDS on a list subclass
    del items

  def __repr__(self):
    return f"<ignored {self.global_name}>"


_PLACEHOLDERS: dict[str, type] = {}


def placeholder_class(global_name: str) -> type:
  """The (cached) inert stand-in for the pickled global `global_name`."""
  if global_name not in _PLACEHOLDERS:
    _PLACEHOLDERS[global_name] = type(f"Ignored[{global_name}]", (Ignored,),
                                      {"global_name": global_name, "__slots__": ()})
  return _PLACEHOLDERS[global_name]


def _allowed_globals() -> dict[str, Any]:
  """'module.name' -> object for the globals a checkpoint may use: the allow-list of
  `torch.load(weights_only=True)` (tensor rebuild functions, storage types, dtypes, torch.Size,
  OrderedDict, ...), plus the plain builtin containers."""
  import torch
  allowed: dict[str, Any] = {}
  try:
    from torch import _weights_only_unpickler
    allowed.update(_weights_only_unpickler._get_allowed_globals())  # pylint: disable=protected-access
  except (ImportError, AttributeError):   # an older / newer torch: the essentials by hand
    allowed.update({
        "collections.OrderedDict": collections.OrderedDict,
        "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
    })
  allowed.update({"builtins.dict": dict, "builtins.list": list, "builtins.tuple": tuple,
                  "builtins.set": set, "builtins.frozenset": frozenset,
                  "collections.OrderedDict": collections.OrderedDict})
  return allowed


class _Unpickler(pickle.Unpickler):
  """pickle.Unpickler whose globals come from the allow-list or are placeholders.

  The C unpickler resolves every global (GLOBAL, STACK_GLOBAL, INST, EXT*) through `find_class`,
  so nothing outside the allow-list is ever imported, and REDUCE / NEWOBJ / BUILD only ever call
  allow-listed functions or placeholder classes.
  """

  def __init__(self, file, storages, allowed: dict[str, Any]):
    super().__init__(file, encoding="utf-8")
    self._storages = storages
    self._allowed = allowed
    self.ignored: set[str] = set()

  def find_class(self, module: str, name: str):
    # Python 2 names (protocol <= 2 writes builtins as __builtin__): a rename, nothing imported.
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
      module = _compat_pickle.IMPORT_MAPPING[module]
    full = f"{module}.{name}"
    if full in self._allowed:
      return self._allowed[full]
    self.ignored.add(full)
    return placeholder_class(full)

  def persistent_load(self, pid):
    return self._storages(pid)


def _storage_dtype(storage_type):
  import torch
  if storage_type is torch.UntypedStorage:
    return torch.uint8
  dtype = getattr(storage_type, "dtype", None)
  if not isinstance(dtype, torch.dtype):
    raise TorchFileError(f"a tensor with an unknown storage type {storage_type!r}")
  return dtype


@dataclasses.dataclass
class Loaded:
  """What `load` read: the object, and the globals it replaced by placeholders."""
  obj: Any
  ignored: set[str]
  format: str   # 'zip' | 'legacy'


def load(path: str) -> Loaded:
  """The object `torch.save` wrote to `path`, with tensors on the CPU and every global outside
  the allow-list replaced by an inert placeholder (see the module docstring).

  Raises TorchFileError (one line, without the path) when the file is not a readable
  checkpoint: truncated, another format, a tensor type we do not read.
  """
  with open(path, "rb") as f:
    head = f.read(4)
  if head == b"PK\x03\x04":      # torch.save's zip archives start with their first record
    if not zipfile.is_zipfile(path):
      raise TorchFileError("a truncated or damaged zip archive (no central directory)")
    return _load_zip(path)
  if _is_tar(path):
    raise TorchFileError("a checkpoint in the tar format of the earliest PyTorch releases, "
                         "which is not supported; re-save it with a newer PyTorch")
  return _load_legacy(path)


def _is_tar(path: str) -> bool:
  try:
    return tarfile.is_tarfile(path)
  except OSError:
    return False


def _load_zip(path: str) -> Loaded:
  import torch
  try:
    reader = torch._C.PyTorchFileReader(path)  # pylint: disable=protected-access
  except RuntimeError as e:
    raise TorchFileError(f"not a readable PyTorch zip archive ({_short(e)})") from e
  records = set(reader.get_all_records())
  if "constants.pkl" in records:
    raise TorchFileError("a TorchScript archive (torch.jit.save), not a checkpoint")
  if "data.pkl" not in records:
    raise TorchFileError("a zip archive without data.pkl (not written by torch.save)")
  if "byteorder" in records:
    order = reader.get_record("byteorder").decode("ascii", "replace").strip()
    if order != "little":
      raise TorchFileError(f"tensors saved {order}-endian; only little-endian files are read")
  loaded: dict[str, Any] = {}

  def storages(pid):
    if not isinstance(pid, tuple) or len(pid) != 5 or _ascii(pid[0]) != "storage":
      raise TorchFileError(f"unexpected persistent id {str(pid)[:60]}")
    _, storage_type, key, _location, numel = pid
    dtype = _storage_dtype(storage_type)
    key = _ascii(key)
    if key not in loaded:
      nbytes = int(numel) * torch._utils._element_size(dtype)  # pylint: disable=protected-access
      untyped = reader.get_storage_from_record(f"data/{key}", nbytes, torch.UntypedStorage)
      untyped = untyped._typed_storage()._untyped_storage  # pylint: disable=protected-access
      loaded[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
    return loaded[key]

  unpickler = _Unpickler(_io.BytesIO(reader.get_record("data.pkl")), storages, _allowed_globals())
  obj = _run(unpickler)
  return Loaded(obj, unpickler.ignored, "zip")


def _load_legacy(path: str) -> Loaded:
  """torch.serialization._legacy_load's format: magic number, protocol version, system info,
  the object's pickle, the storage keys, then each storage as int64 element count + bytes."""
  import torch
  allowed = _allowed_globals()
  ignored: set[str] = set()
  roots: dict[str, Any] = {}
  views: dict[str, Any] = {}

  def plain(f):   # the small header pickles: plain data only
    unpickler = _Unpickler(f, _no_storage, allowed)
    value = _run(unpickler)
    ignored.update(unpickler.ignored)
    return value

  def storages(pid):
    if not isinstance(pid, tuple) or not pid:
      raise TorchFileError(f"unexpected persistent id {str(pid)[:60]}")
    kind, data = _ascii(pid[0]), pid[1:]
    if kind == "module":   # a whole pickled nn.Module's class: its placeholder
      return data[0]
    if kind != "storage" or len(data) != 5:
      raise TorchFileError(f"unexpected persistent id {str(pid)[:60]}")
    storage_type, root_key, _location, numel, view = data
    dtype = _storage_dtype(storage_type)
    root_key = _ascii(root_key)
    if root_key not in roots:
      nbytes = int(numel) * torch._utils._element_size(dtype)  # pylint: disable=protected-access
      roots[root_key] = torch.storage.TypedStorage(wrap_storage=torch.UntypedStorage(nbytes),
                                                   dtype=dtype, _internal=True)
    typed = roots[root_key]
    if view is None:
      return typed
    view_key, offset, size = view
    view_key = _ascii(view_key)
    if view_key not in views:
      size_of = torch._utils._element_size(dtype)  # pylint: disable=protected-access
      views[view_key] = torch.storage.TypedStorage(
          wrap_storage=typed._untyped_storage[offset * size_of:(offset + size) * size_of],  # pylint: disable=protected-access
          dtype=dtype, _internal=True)
    return views[view_key]

  with open(path, "rb") as f:
    try:
      magic = plain(f)
    except TorchFileError as e:
      raise TorchFileError(f"neither a zip nor a legacy PyTorch checkpoint ({e})") from e
    if magic != LEGACY_MAGIC_NUMBER:
      raise TorchFileError("neither a zip nor a legacy PyTorch checkpoint (no torch.save magic "
                           "number at its start)")
    version = plain(f)
    if version != LEGACY_PROTOCOL_VERSION:
      raise TorchFileError(f"legacy checkpoint of an unknown protocol version {version!r}")
    sys_info = plain(f)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
      raise TorchFileError("tensors saved big-endian; only little-endian files are read")
    unpickler = _Unpickler(f, storages, allowed)
    obj = _run(unpickler)
    ignored.update(unpickler.ignored)
    keys = plain(f)
    if not isinstance(keys, list):
      raise TorchFileError("legacy checkpoint without its list of storages")
    for key in keys:
      key = _ascii(key)
      if key not in roots:
        raise TorchFileError(f"legacy checkpoint lists storage {key!r} that no tensor uses")
      _read_legacy_storage(f, roots[key])
  return Loaded(obj, ignored, "legacy")


def _read_legacy_storage(f, typed) -> None:
  import numpy as np
  import torch
  header = f.read(8)
  if len(header) != 8:
    raise TorchFileError("truncated (a storage's header is missing)")
  count = int(np.frombuffer(header, "<i8")[0])
  nbytes = typed._untyped_storage.nbytes()  # pylint: disable=protected-access
  size_of = torch._utils._element_size(typed.dtype)  # pylint: disable=protected-access
  if count * size_of != nbytes:
    raise TorchFileError(f"a storage of {count} elements where its tensors expect "
                         f"{nbytes // size_of}")
  data = f.read(nbytes)
  if len(data) != nbytes:
    raise TorchFileError(f"truncated (a storage has {len(data)} of its {nbytes} bytes)")
  if nbytes:
    typed._untyped_storage.copy_(torch.UntypedStorage.from_buffer(  # pylint: disable=protected-access
        data, dtype=torch.uint8))


def _no_storage(pid):
  raise TorchFileError(f"unexpected tensor data in a header pickle ({str(pid)[:60]})")


def _run(unpickler: _Unpickler):
  try:
    return unpickler.load()
  except TorchFileError:
    raise
  except RecursionError as e:
    raise TorchFileError("its pickle nests too deeply") from e
  except Exception as e:  # pickle / torch raise many types for truncated or foreign data
    raise TorchFileError(f"its pickle cannot be read ({_short(e)})") from e


def _ascii(value) -> str:
  return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _short(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:160]}"


# ------------------------------------------------------------------------- what was ignored


def placeholders_in(value) -> set[str]:
  """Globals of the placeholders anywhere inside `value` (containers walked, tensors skipped)."""
  import torch
  found: set[str] = set()
  stack, seen = [value], set()
  while stack:
    item = stack.pop()
    if id(item) in seen:
      continue
    seen.add(id(item))
    if isinstance(item, Ignored):
      found.add(type(item).global_name)
    elif isinstance(item, type) and issubclass(item, Ignored):
      found.add(item.global_name)
    elif isinstance(item, torch.Tensor):
      continue
    elif isinstance(item, dict):
      stack.extend(item.keys())
      stack.extend(item.values())
      stack.extend(getattr(item, "__dict__", {}).values())   # an OrderedDict's _metadata
    elif isinstance(item, (list, tuple, set, frozenset)):
      stack.extend(item)
  return found


def describe_ignored(entries: dict) -> str | None:
  """One line naming what a checkpoint's `entries` (its top-level entries besides the state
  dict) held that was not read, e.g. "ignored non-tensor entries: args (argparse.Namespace),
  settings (lib.train.admin.settings.Settings); also not imported: epoch, optimizer, scaler".
  None when there are no entries."""
  with_objects, plain = [], []
  for key, value in entries.items():
    globs = placeholders_in(value)
    if globs:
      with_objects.append(f"{key} ({', '.join(sorted(globs))})")
    else:
      plain.append(str(key))
  parts = []
  if with_objects:
    parts.append("ignored non-tensor entries: " + ", ".join(with_objects))
  if plain:
    parts.append(f"{'also ' if with_objects else ''}not imported: {', '.join(plain)}")
  return "; ".join(parts) or None
