"""Finds and loads oneDNN and the FFI extension; registers the FFI targets.

The extension (`_conv_ffi*.so`, built from conv.cc by setup.py) links
against libdnnl.so.3, which the `onednn-cpu-gomp` wheel installs under
`<prefix>/lib`, a directory the dynamic loader does not search. So oneDNN
is loaded first with ctypes and RTLD_GLOBAL (the extension's dependency
then resolves to it by its soname), and then the extension. Where either is
missing (no compiler at install time, macOS, ARM, an uninstalled wheel)
`available()` is False and one warning per process says that convolutions
use XLA's kernels. JAXSEG_ONEDNN=0 turns the extension off on purpose
(then without a warning).
"""

import ctypes
import importlib.machinery
import importlib.metadata
import logging
import os
import pathlib
import sys
import threading
from typing import Optional

logger = logging.getLogger('jaxseg.onednn')

_HERE = pathlib.Path(__file__).resolve().parent
DNNL_SONAME = 'libdnnl.so.3'
ENV = 'JAXSEG_ONEDNN'
# FFI target name -> the extension's handler symbol.
TARGETS = {
    'jaxseg_onednn_conv_fwd': 'JaxsegOnednnConvFwd',
    'jaxseg_onednn_conv_bwd_data': 'JaxsegOnednnConvBwdData',
    'jaxseg_onednn_conv_bwd_weights': 'JaxsegOnednnConvBwdWeights',
}

_lock = threading.Lock()
_state: dict = {}


def _dnnl_candidates() -> list[pathlib.Path]:
  """Where libdnnl.so.3 may be: the runtime wheel's files, then prefixes."""
  found = []
  try:
    dist = importlib.metadata.distribution('onednn-cpu-gomp')
    for f in dist.files or ():
      if f.name == DNNL_SONAME:
        found.append(pathlib.Path(dist.locate_file(f)).resolve())
  except importlib.metadata.PackageNotFoundError:
    pass
  for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
    found.append(pathlib.Path(prefix) / 'lib' / DNNL_SONAME)
  return [p for p in dict.fromkeys(found) if p.is_file()]


def extension_path() -> Optional[pathlib.Path]:
  """The built extension beside this file, or None."""
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = _HERE / f'_conv_ffi{suffix}'
    if path.is_file():
      return path
  return None


def _load() -> dict:
  """{'lib': CDLL} or {'reason': why not}; registers the FFI targets."""
  if os.environ.get(ENV, '1').strip().lower() in ('0', 'false', 'off', 'no'):
    return {'reason': f'{ENV}={os.environ[ENV]}', 'quiet': True}
  if not (sys.platform.startswith('linux')):
    return {'reason': f'not built for {sys.platform}'}
  ext = extension_path()
  if ext is None:
    return {'reason': f'the extension jaxseg/onednn/_conv_ffi*.so is not built '
                      f'(no C++ compiler or oneDNN wheels at install time)'}
  candidates = _dnnl_candidates()
  errors = []
  dnnl = None
  for path in candidates + [pathlib.Path(DNNL_SONAME)]:
    try:
      dnnl = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
      break
    except OSError as e:
      errors.append(str(e))
  if dnnl is None:
    return {'reason': f'{DNNL_SONAME} not found (pip install '
                      f'onednn-cpu-gomp==2023.2.0): {"; ".join(errors)}'}
  try:
    lib = ctypes.CDLL(str(ext))
  except OSError as e:
    return {'reason': f'cannot load {ext.name}: {e}'}
  import jax  # pylint: disable=g-import-not-at-top
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                platform='cpu')
  i64, p64 = ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
  lib.JaxsegOnednnPrepare.argtypes = (
      [i64] * 6 + [p64] * 7 + [ctypes.c_char_p, i64])
  lib.JaxsegOnednnPrepare.restype = ctypes.c_int
  lib.JaxsegOnednnCacheSize.restype = i64
  lib.JaxsegOnednnVersion.restype = i64
  return {'lib': lib, 'dnnl': dnnl}


def state() -> dict:
  """Loads once per process; logs one warning where it is not available."""
  with _lock:
    if not _state:
      _state.update(_load())
      if 'reason' in _state and not _state.get('quiet'):
        logger.warning(
            'jaxseg.onednn: convolutions use XLA\'s kernels: the oneDNN '
            'extension is not available (%s).', _state['reason'])
    return _state


def library() -> Optional[ctypes.CDLL]:
  return state().get('lib')
