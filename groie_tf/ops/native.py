"""The project's C++ op, built with the local compiler at first use.

`GroieRoiAlignGrad` (`kernels/roi_align_grad.cc`) is RoIAlign's exact,
race-free CPU gradient, as fast as TensorFlow's racy one (docs/performance.md).
Like PyTorch's `cpp_extension.load`, it is compiled on the machine that
runs it, against the TensorFlow installed there (a prebuilt library would
have to match every TensorFlow build), and cached:

    $GROIE_TF_CACHE, else $XDG_CACHE_HOME/groie_tf, else ~/.cache/groie_tf

under a name holding TensorFlow's version and the source's hash, so an
upgrade rebuilds it. `python -m groie_tf.ops.native` builds it ahead of
time and says where.

Without a C++ compiler, `load()` returns None and RoIAlign's `'auto'`
implementation uses its pure-TensorFlow gradient (`'sparse'`): just as
exact, slower on a CPU. The log says which one runs and why; choose
`'sparse'` (`roi_align_implementation`) to use it anyway.
"""

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

from absl import logging
import tensorflow as tf

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels',
                       'roi_align_grad.cc')


class BuildError(RuntimeError):
  """The compiler failed; the message holds its command and output."""


def cache_dir() -> str:
  """Where built libraries are kept (see the module doc)."""
  if os.environ.get('GROIE_TF_CACHE'):
    return os.environ['GROIE_TF_CACHE']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'groie_tf')


def library_path(directory: Optional[str] = None) -> str:
  """The library's path for this source and this TensorFlow."""
  with open(_SOURCE, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:12]
  return os.path.join(directory or cache_dir(),
                      f'roi_align_grad-tf{tf.__version__}-{digest}.so')


def compiler() -> Optional[str]:
  """The C++ compiler to use: $CXX, else c++ or g++ on the PATH."""
  for name in (os.environ.get('CXX'), 'c++', 'g++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def build(path: Optional[str] = None) -> str:
  """Compiles the library to `path` (default `library_path()`).

  Writes to a temporary file renamed into place, so that processes
  building at once never load a half-written library.

  Raises:
    BuildError: no compiler, or it failed (its output is in the message).
  """
  path = path or library_path()
  cxx = compiler()
  if cxx is None:
    raise BuildError('no C++ compiler found (set CXX, or install g++)')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handle, partial = tempfile.mkstemp(suffix='.so',
                                     dir=os.path.dirname(path))
  os.close(handle)
  command = ([cxx, '-shared', '-fPIC', '-O3', _SOURCE, '-o', partial] +
             tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())
  result = subprocess.run(command, capture_output=True, text=True,
                          check=False)
  if result.returncode:
    os.remove(partial)
    raise BuildError(f'{" ".join(command)}\n{result.stderr[-3000:]}')
  os.replace(partial, path)
  return path


@functools.lru_cache(maxsize=None)
def load():
  """The loaded op module (`.groie_roi_align_grad`), or None (logged once)
  when it cannot be built here."""
  path = library_path()
  try:
    if not os.path.exists(path):
      try:
        build(path)
      except OSError:  # an unwritable cache: build for this process only
        path = build(library_path(tempfile.mkdtemp(prefix='groie_tf_')))
    module = tf.load_op_library(path)
  except (BuildError, OSError, tf.errors.NotFoundError) as error:
    logging.warning(
        'RoIAlign gradient: the C++ kernel could not be built or loaded, so '
        'the exact but slower TensorFlow gradient runs. Reason: %s', error)
    return None
  logging.info('RoIAlign gradient: the C++ kernel %s.', path)
  return module


if __name__ == '__main__':
  try:
    print(build())
  except BuildError as failure:
    sys.exit(f'Could not build the C++ kernel: {failure}')
