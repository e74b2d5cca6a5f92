"""Builds jaxseg's optional oneDNN convolution extension (jaxseg/onednn/conv.cc).

Everything else about the package is in pyproject.toml. The extension is an
XLA FFI handler library, loaded with ctypes (jaxseg/onednn/_loader.py), not
a Python module. It needs, at build time, a C++17 compiler, oneDNN's headers
and library (the `onednn-devel-cpu-gomp` and `onednn-cpu-gomp` wheels) and
the XLA FFI headers (jaxlib's include/ directory): pyproject.toml's
[build-system] requires them on Linux x86-64. Where any is missing (macOS,
ARM, no compiler) the extension is left out, the install succeeds, and
jaxseg.onednn says at import that convolutions use XLA's kernels.
"""

import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import sys

from setuptools import Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

DNNL_HEADER = 'oneapi/dnnl/dnnl.hpp'


def _wheel_file(dist_name: str, suffix: str):
  """The installed path of a wheel's file ending in `suffix`, or None.

  The oneDNN wheels put their headers and libraries in the data scheme
  (<prefix>/include, <prefix>/lib): under pip's build isolation that prefix
  is the temporary build environment, not sys.prefix, so ask the wheel's
  RECORD."""
  try:
    dist = importlib.metadata.distribution(dist_name)
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in dist.files or ():
    if str(f).replace('\\', '/').endswith(suffix):
      path = pathlib.Path(dist.locate_file(f)).resolve()
      if path.is_file():
        return path
  return None


def _dnnl_dirs():
  """(include dir, lib dir) of oneDNN, or None."""
  header = _wheel_file('onednn-devel-cpu-gomp', DNNL_HEADER)
  lib = (_wheel_file('onednn-cpu-gomp', '/libdnnl.so') or
         _wheel_file('onednn-devel-cpu-gomp', '/libdnnl.so'))
  prefix = pathlib.Path(sys.prefix)
  if header is None and (prefix / 'include' / DNNL_HEADER).is_file():
    header = prefix / 'include' / DNNL_HEADER
  if lib is None and (prefix / 'lib' / 'libdnnl.so').exists():
    lib = prefix / 'lib' / 'libdnnl.so'
  if header is None or lib is None:
    return None
  return str(header.parents[2]), str(lib.parent)


def _ffi_include():
  """jaxlib's include/ directory (xla/ffi/api/ffi.h), or None."""
  spec = importlib.util.find_spec('jaxlib')
  if spec is None or not spec.submodule_search_locations:
    return None
  for root in spec.submodule_search_locations:
    inc = pathlib.Path(root) / 'include'
    if (inc / 'xla' / 'ffi' / 'api' / 'ffi.h').is_file():
      return str(inc)
  return None


class OptionalBuildExt(build_ext):
  """build_ext that reports, rather than fails on, a missing dependency or
  compiler (the Extension is also optional=True, which covers errors in
  the compile and link steps)."""

  def run(self):
    try:
      super().run()
    except Exception as e:  # pylint: disable=broad-except
      print(f'jaxseg: the oneDNN extension was not built ({e}); '
            'convolutions will use XLA\'s kernels.', file=sys.stderr)


def _extensions():
  why = None
  if not (sys.platform.startswith('linux') and
          platform.machine() in ('x86_64', 'AMD64')):
    why = f'{sys.platform} {platform.machine()} (Linux x86-64 only)'
  elif os.environ.get('JAXSEG_ONEDNN_BUILD', '1') == '0':
    why = 'JAXSEG_ONEDNN_BUILD=0'
  else:
    dnnl, ffi = _dnnl_dirs(), _ffi_include()
    if dnnl is None:
      why = 'oneDNN headers/library not found (onednn-devel-cpu-gomp)'
    elif ffi is None:
      why = 'XLA FFI headers not found (jaxlib)'
  if why:
    print(f'jaxseg: not building the oneDNN extension: {why}',
          file=sys.stderr)
    return []
  include, libdir = dnnl
  return [Extension(
      'jaxseg.onednn._conv_ffi',
      sources=['jaxseg/onednn/conv.cc'],
      include_dirs=[include, ffi],
      library_dirs=[libdir],
      libraries=['dnnl'],
      language='c++',
      extra_compile_args=['-std=c++17', '-fopenmp', '-Wno-return-type'],
      extra_link_args=['-fopenmp'],
      optional=True)]


setup(ext_modules=_extensions(), cmdclass={'build_ext': OptionalBuildExt})
