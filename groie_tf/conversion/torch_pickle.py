"""Reads a PyTorch checkpoint (`.pth`) into numpy arrays, without PyTorch.

`torch.save` writes one of two formats:

- legacy (torch < 1.6, and `_use_new_zipfile_serialization=False`, which
  mmdetection's `publish_model.py` uses, so every published mmdetection
  checkpoint): five pickles in a row (magic number, protocol version, system
  info, the object, the storage keys), then each storage's bytes after an
  8-byte element count;
- zip (the default since torch 1.6): `<name>/data.pkl` is the object, each
  storage is the raw bytes of `<name>/data/<key>`.

In both, the object's pickle refers to storages by persistent id and
rebuilds tensors with `torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)`. Here that call gives a numpy array viewed with those
strides, copied. No class is imported from the pickle: the names a tensor
needs are mapped to the functions below, `OrderedDict` to Python's, and any
other class (an mmcv or mmengine object in `meta`) becomes an inert
`Opaque` record. Unlike `torch.load` of an untrusted file, reading one runs
no code from it.
"""

import collections
import io
import pickle
import zipfile
from typing import Any, BinaryIO, Dict, Tuple

import numpy as np

from groie_tf.errors import CheckpointError

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch's storage classes by name, their numpy dtypes.
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32,
    'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8,
    'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class Opaque(dict):
  """A pickled object of a class not read here, kept inert: its
  constructor arguments, its state, and the items or elements a dict or
  list subclass pickles after it (a dict, so that both kinds load).
  Pickle may make one without calling `__init__` (protocol 2's NEWOBJ),
  hence the class-level defaults."""
  args, kwargs, state = (), None, None

  def __init__(self, *args, **kwargs):
    super().__init__()
    self.args, self.kwargs = args, kwargs

  def __setstate__(self, state):
    self.state = state

  @property
  def elements(self) -> list:
    return self.__dict__.setdefault('_elements', [])

  def append(self, element):
    self.elements.append(element)

  def extend(self, elements):
    self.elements.extend(elements)


class _StorageType:
  """A torch storage class, as its pickle names it."""

  def __init__(self, name: str):
    dtype = _STORAGE_DTYPES.get(name)
    if dtype is None:
      raise CheckpointError(f'the checkpoint holds a torch.{name}, which is '
                            'not read here (float, int and bool only).')
    self.dtype = np.dtype(dtype)


class _Tensor:
  """torch._utils._rebuild_tensor_v2's arguments: a strided view of a
  storage, made an array once the storages are read (a legacy file's bytes
  come after the object)."""

  def __init__(self, storage: np.ndarray, offset: int,
               size: Tuple[int, ...], stride: Tuple[int, ...], *unused):
    del unused  # requires_grad, backward hooks, metadata
    self.storage, self.offset = storage, offset
    self.size, self.stride = tuple(size), tuple(stride)

  def array(self) -> np.ndarray:
    itemsize = self.storage.dtype.itemsize
    if self.size and (self.offset + sum(
        (n - 1) * s for n, s in zip(self.size, self.stride)) >=
                      self.storage.size):
      raise CheckpointError('a tensor reaches past its storage.')
    return np.array(np.lib.stride_tricks.as_strided(
        self.storage[self.offset:], shape=self.size,
        strides=tuple(s * itemsize for s in self.stride)))


def _rebuild_parameter(data: _Tensor, *unused) -> _Tensor:
  del unused
  return data


def _arrays(value: Any) -> Any:
  """`value` with every `_Tensor` in its dicts, lists and tuples an array."""
  if isinstance(value, _Tensor):
    return value.array()
  if isinstance(value, dict):
    for key in value:
      value[key] = _arrays(value[key])
    return value
  if isinstance(value, list):
    return [_arrays(v) for v in value]
  if isinstance(value, tuple):
    return tuple(_arrays(v) for v in value)
  return value


class _Unpickler(pickle.Unpickler):
  """Resolves torch's names to the readers above, nothing else."""

  def __init__(self, file: BinaryIO, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str):
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _Tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch' and name.endswith('Storage'):
      return _StorageType(name)
    if module == 'torch' and name == 'Size':
      return tuple
    return type(name, (Opaque,), {'__module__': module})

  def persistent_load(self, pid):
    # Legacy: ('storage', type, key, location, numel, view_metadata);
    # zip: ('storage', type, key, location, numel).
    kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
    if kind != 'storage':
      raise CheckpointError(f'unexpected persistent id {kind!r} in the '
                            'checkpoint.')
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    if len(pid) > 5 and pid[5] is not None:
      raise CheckpointError('the checkpoint has storage views (torch < 0.4), '
                            'which are not read here.')
    return self._load_storage(key, storage_type.dtype, numel)


def _read_legacy(f: BinaryIO) -> Any:
  if pickle.load(f) != _LEGACY_MAGIC:
    raise CheckpointError('not a PyTorch checkpoint (bad magic number).')
  if pickle.load(f) != _LEGACY_PROTOCOL:
    raise CheckpointError('unknown PyTorch legacy protocol version.')
  pickle.load(f)  # system info
  storages: Dict[str, np.ndarray] = {}

  def placeholder(key, dtype, numel):
    # The bytes follow the object: fill the array in place afterwards.
    if key not in storages:
      storages[key] = np.empty([numel], dtype)
    return storages[key]

  result = _Unpickler(f, placeholder).load()
  for key in pickle.load(f):
    key = str(key)
    count = int(np.frombuffer(f.read(8), '<i8')[0])
    array = storages[key]
    data = f.read(count * array.dtype.itemsize)
    if count != array.size or len(data) != array.nbytes:
      raise CheckpointError(f'storage {key} of the checkpoint is truncated.')
    array[:] = np.frombuffer(data, array.dtype.newbyteorder('<'))
  return _arrays(result)


def _read_zip(archive: zipfile.ZipFile) -> Any:
  pickles = [n for n in archive.namelist()
             if n.endswith('/data.pkl') or n == 'data.pkl']
  if not pickles:
    raise CheckpointError('a zip file without data.pkl: not a PyTorch '
                          'checkpoint.')
  pickle_name = pickles[0]
  root = pickle_name[:-len('data.pkl')]
  order = f'{root}byteorder'
  if order in archive.namelist() and archive.read(order) != b'little':
    raise CheckpointError('a big-endian PyTorch checkpoint is not read here.')

  def load(key, dtype, numel):
    array = np.frombuffer(archive.read(f'{root}data/{key}'),
                          dtype.newbyteorder('<'))
    if array.size < numel:
      raise CheckpointError(f'storage {key} of the checkpoint is truncated.')
    return array[:numel].astype(dtype)

  with archive.open(pickle_name) as f:
    return _arrays(_Unpickler(io.BytesIO(f.read()), load).load())


def load(path: str) -> Any:
  """The object a `.pth` holds, tensors as numpy arrays.

  Raises:
    CheckpointError: the file is not a PyTorch checkpoint this reads.
  """
  with open(path, 'rb') as f:
    if zipfile.is_zipfile(f):
      f.seek(0)
      with zipfile.ZipFile(f) as archive:
        return _read_zip(archive)
    f.seek(0)
    try:
      return _read_legacy(f)
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
      raise CheckpointError(f'{path} is not a PyTorch checkpoint this reads: '
                            f'{error}') from None
