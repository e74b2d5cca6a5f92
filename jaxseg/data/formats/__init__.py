"""Readers of the studies' on-disk formats, behind one interface.

`sources.discover_cases(root)` tries, in order: a datalist (`dataset.json`, or
a `.json` path: Decathlon/MONAI, 3D or 4D NIfTI, `jaxseg.data.datalist`),
then the layouts of the readers below in their order (BraTS 2018+ NIfTI
case folders last). Every reader module has

    LAYOUT: str                          one line naming the layout on disk
    detect(root) -> bool                 cheap (file names only)
    discover(root) -> list[case.Case] cases with `reader` = its key here
    check(case, modalities) -> (H, W, D) headers only where the format allows
    load(case, modalities) -> case.Volume

and imports only `jaxseg.data.case` and `jaxseg.data.checks` of the data
package (no import circle). `modalities` are canonical names
(`case.canonical_modality`) the case is
known to have. Optional dependencies (SimpleITK, tifffile, pycocotools) are
imported inside `check`/`load`, so `detect` and the rest of jaxseg work
without them; a missing one is an `InputError` naming the pip extra.
"""

import importlib
from types import ModuleType

from jaxseg.errors import InputError

# reader key -> module; detection runs in this order.
READERS = {
    'brats15_mha': 'jaxseg.data.formats.brats15_mha',
    'lgg_tiff': 'jaxseg.data.formats.lgg_tiff',
    'coco': 'jaxseg.data.formats.coco',
    'npy_slices': 'jaxseg.data.formats.npy_slices',
    'nifti': 'jaxseg.data.formats.nifti',
}


def reader(name: str) -> ModuleType:
  """The reader module registered as `name`."""
  if name not in READERS:
    raise InputError(f'reader {name!r}', f'unknown; known: {sorted(READERS)}')
  return importlib.import_module(READERS[name])


def detect_layout(root: str) -> ModuleType | None:
  """The first reader whose layout `root` holds, or None."""
  for name in READERS:
    module = reader(name)
    if module.detect(root):
      return module
  return None


def describe_layouts() -> str:
  """The layouts the readers accept, for error messages."""
  return '; '.join(reader(name).LAYOUT for name in READERS)


def require(module: str, extra: str, path: str) -> ModuleType:
  """Imports an optional dependency or raises InputError naming the extra."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise InputError(path, f'reading this format needs {module}: pip install '
                     f"'jaxseg[{extra}]'") from None
