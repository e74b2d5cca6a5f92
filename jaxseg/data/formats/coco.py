"""COCO-annotated 2D grey images: the Roboflow export of seed 001's Kaggle set.

Layout ("Brain Tumor Image DataSet: Semantic Segmentation"):

    <root>/train/_annotations.coco.json   + the split's images (.jpg)
    <root>/valid/_annotations.coco.json   + ...
    <root>/test/_annotations.coco.json    + ...

Any subset of the split folders may be present (`train`/`training`,
`valid`/`val`/`validation`, `test`/`testing`, any case); `root` may also be
one folder holding `_annotations.coco.json`. Each json has "images"
[{id, file_name, height, width}], "annotations" [{id, image_id, category_id,
segmentation, bbox, iscrowd}] and "categories" [{id, name}].

Conventions:
* Each image is one case: case_id = the file stem (`<folder>_<stem>` where
  stems collide across splits), split = 'training' / 'validation' / 'test'
  after the folder (None for a folder of another name), images =
  {'grey': image path}, label = the json path, key = the json's file_name.
* Categories: with the option `tumour_categories` (names), exactly those
  are tumour. Otherwise a category whose name, lower-cased with '-'/'_' read
  as spaces, is one of `BACKGROUND_NAMES` ('0', 'no tumor', 'no tumour',
  'non tumor', 'notumor', 'background', ...) or names an MR sequence or the
  scan (`NOT_TUMOUR_NAMES`: 'T1', 'T1c', 'FLAIR', 'MRI', ...: exports that
  box each image's modality) is not tumour and its annotations are ignored;
  every other category (Roboflow's parent 'Tumor', '1', 'tumor', ...) is
  tumour.
* The mask (labels 0/1) is the union of the tumour annotations, rasterised by
  pycocotools: polygons (a list of [x1, y1, x2, y2, ...], pixel (row i,
  column j) covers [j, j+1] x [i, i+1], as in COCO), compressed or
  uncompressed RLE, and, for an annotation whose segmentation is missing or
  empty, its bbox [x, y, w, h] rendered as a box.
* Rendered coordinates must lie in [0, width] x [0, height] within
  `COORD_TOL` pixels; annotations of background categories are not
  rendered, so their geometry is not checked.
* The image is read with Pillow into one float32 grey channel: 'L', 'I;16',
  'I', 'F' as stored; RGB(A)/palette images must be grey and give their
  ITU-R 601 luminance (equal channels: that channel exactly); alpha is
  ignored. Grey means: at most `max_colour_fraction` (default 2 %) of the
  pixels have channels further apart than `grey_tolerance` levels (default
  16 of 255). JPEG's chroma subsampling leaves grey images saved as RGB up
  to ~10 levels apart, and exports carry small coloured marks (a logo, a
  drawn box); a colour image differs almost everywhere.
* A grey image with a colour tint (the export's slices tinted blue: channels
  up to ~60 levels apart on 15 % of the pixels) is read the same way, as its
  luminance, and counted (`take_tinted`; the inspector prints one warning
  line with the count). Tinted means its channels move
  together, each an affine function of one grey signal: every pair of
  channels correlates at >= `TINT_CORRELATION`, and at most
  `max_colour_fraction` of the pixels lie further than `grey_tolerance`
  (as channel spread) from the line fitted through the pixels' RGB values
  (their first principal axis). Other colour images are refused.
* Options (`config.data.formats.coco`, passed to `discover`):
  `grey_tolerance`, `max_colour_fraction`, `tumour_categories`.
* Volume: image (H, W, 1, 1), label (H, W, 1) uint8, affine identity (the
  pixel spacing is not recorded).

Each json is parsed and validated once per (path, mtime, size)
(`read_annotations`); `load` only reads one image and rasterises its shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Sequence
import warnings

import numpy as np

from jaxseg.data import formats
from jaxseg.data import checks
from jaxseg import labels
from jaxseg.data.case import Case, GREY, Volume
from jaxseg.errors import InputError, read_json_object

ANNOTATIONS = '_annotations.coco.json'

LAYOUT = ('COCO-annotated images (<root>/train|valid|test/ holding images and '
          f'{ANNOTATIONS}, or one such folder)')

# Split folder name (lower case) -> Case.split.
SPLIT_FOLDERS = {
    'train': 'training', 'training': 'training',
    'valid': 'validation', 'val': 'validation', 'validation': 'validation',
    'test': 'test', 'testing': 'test',
}

# Normalised category names that mean "no tumour"; any other is tumour.
BACKGROUND_NAMES = frozenset({
    '0', 'no tumor', 'no tumour', 'non tumor', 'non tumour', 'notumor',
    'notumour', 'background', 'no', 'negative', 'healthy', 'normal',
})

# How far (pixels) a rendered coordinate may lie outside [0, width/height].
COORD_TOL = 0.5
# Category names (normalised as `BACKGROUND_NAMES`) of what is not a lesion
# but the scan: modality boxes some exports draw on every image.
NOT_TUMOUR_NAMES = frozenset({
    't1', 't1w', 't1n', 't1c', 't1ce', 't1gd', 't1 ce', 't1 gd', 't1 contrast',
    't2', 't2w', 't2f', 'flair', 't2 flair', 'pd', 'dwi', 'adc', 'mri', 'mr',
    'brain', 'skull', 'head', 'scan',
})
# Defaults of the reader options (config.data.formats.coco).
DEFAULT_OPTIONS = dict(grey_tolerance=16, max_colour_fraction=0.02,
                       tumour_categories=None)

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

# A tinted grey image's channels correlate at least this much, pairwise
# (the export's tinted slices: > 0.95; the tests' tinted JPEGs: > 0.998;
# colour images with different content per channel: far lower or < 0).
TINT_CORRELATION = 0.9

# Paths of the tinted grey images read since the last `take_tinted` (a dict:
# each once, in reading order). Cases are read in the calling process, one
# after another, so a module-level record reaches the caller.
_TINTED: dict[str, None] = {}


@dataclasses.dataclass(frozen=True)
class Shape:
  """One tumour annotation's geometry.

  kind 'polygons': data = ((x1, y1, x2, y2, ...), ...);
  kind 'rle': data = (counts, ) with counts a tuple of ints (uncompressed) or
  a str (compressed); kind 'box': data = (x, y, w, h).
  """
  kind: str
  data: tuple
  where: str          # 'annotations[i] (id ...)', for error messages


@dataclasses.dataclass(frozen=True)
class CocoImage:
  """One image entry of a json and the tumour shapes drawn on it."""
  file_name: str
  path: str
  height: int
  width: int
  shapes: tuple[Shape, ...]


@dataclasses.dataclass(frozen=True)
class CocoSet:
  """A parsed, validated `_annotations.coco.json`."""
  path: str
  images: dict[str, CocoImage]        # file_name -> entry, in file order
  tumour_categories: dict[int, str]   # id -> name
  background_categories: dict[int, str]


def _normalised(name: Any) -> str:
  return ' '.join(str(name).lower().replace('-', ' ').replace('_', ' ').split())


def is_tumour_category(name: Any, tumour_categories=None) -> bool:
  """Whether annotations of category `name` are drawn as tumour (module doc).

  Args:
    name: the category's name.
    tumour_categories: the names that are tumour (any others are not), or
      None: every name but `BACKGROUND_NAMES` and `NOT_TUMOUR_NAMES`.
  """
  key = _normalised(name)
  if tumour_categories is not None:
    return key in {_normalised(n) for n in tumour_categories}
  return key not in BACKGROUND_NAMES and key not in NOT_TUMOUR_NAMES


def _options(options: dict) -> dict:
  """The reader options with defaults filled in; InputError on a bad value."""
  unknown = set(options) - set(DEFAULT_OPTIONS)
  if unknown:
    raise InputError(f'config.data.formats.coco.{sorted(unknown)[0]}',
                     f'unknown option; known: {", ".join(DEFAULT_OPTIONS)}')
  out = dict(DEFAULT_OPTIONS, **{k: v for k, v in options.items()
                                 if v is not None or k == 'tumour_categories'})
  if not 0 <= out['grey_tolerance'] <= 255:
    raise InputError('config.data.formats.coco.grey_tolerance',
                     f'must be in [0, 255] grey levels, got {out["grey_tolerance"]}')
  if not 0 <= out['max_colour_fraction'] <= 1:
    raise InputError('config.data.formats.coco.max_colour_fraction',
                     f'must be in [0, 1], got {out["max_colour_fraction"]}')
  if out['tumour_categories'] is not None:
    out['tumour_categories'] = tuple(str(n) for n in out['tumour_categories'])
  return out


def _split_dirs(root: str) -> list[str]:
  """The split folders under `root` that hold an annotation file."""
  if not os.path.isdir(root):
    return []
  out = []
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if (name.lower() in SPLIT_FOLDERS and
        os.path.isfile(os.path.join(folder, ANNOTATIONS))):
      out.append(folder)
  return out


def detect(root: str) -> bool:
  """True if `root` or its split folders hold `_annotations.coco.json`."""
  root = os.fspath(root)
  return (os.path.isfile(os.path.join(root, ANNOTATIONS)) or
          bool(_split_dirs(root)))


def discover(root: str, **options) -> list[Case]:
  """One case per listed image, sorted by id; InputError on a bad json.

  `options`: `DEFAULT_OPTIONS`' keys; they travel with each case.
  """
  options = _options(options)
  root = os.fspath(root)
  folders = _split_dirs(root)
  if not folders:
    if not os.path.isfile(os.path.join(root, ANNOTATIONS)):
      raise InputError(root, f'no {ANNOTATIONS} in it or in train/ valid/ '
                       'test/ folders')
    folders = [root]
  entries = []            # (folder name, stem, split, json path, image)
  for folder in folders:
    path = os.path.join(folder, ANNOTATIONS)
    coco = read_annotations(path, options['tumour_categories'])
    name = os.path.basename(os.path.normpath(folder))
    split = SPLIT_FOLDERS.get(name.lower())
    for image in coco.images.values():
      if not os.path.isfile(image.path):
        raise InputError(image.path, f'listed in {path} but does not exist')
      stem = os.path.splitext(os.path.basename(image.file_name))[0]
      entries.append((name, stem, split, path, image))
  if not entries:
    raise InputError(root, f'the {ANNOTATIONS} files list no images')
  ids = _case_ids(entries)
  cases = [
      Case(case_id=case_id, images={GREY: image.path},
                   label=path, scheme=labels.BINARY,
                   split=split, source=path, reader='coco',
                   key=image.file_name, options=tuple(sorted(options.items())))
      for case_id, (_, _, split, path, image) in zip(ids, entries)]
  return sorted(cases, key=lambda c: c.case_id)


def _case_ids(entries) -> list[str]:
  """File stems; `<folder>_<stem>` (then `<folder>_<file name>`) on collision."""
  def count(ids):
    seen: dict[str, int] = {}
    for i in ids:
      seen[i] = seen.get(i, 0) + 1
    return seen
  ids = [stem for _, stem, _, _, _ in entries]
  n = count(ids)
  ids = [f'{folder}_{stem}' if n[stem] > 1 else stem
         for (folder, stem, _, _, _) in entries]
  n = count(ids)
  return [f'{e[0]}_{e[4].file_name}'.replace('/', '_') if n[i] > 1 else i
          for i, e in zip(ids, entries)]


def read_annotations(path: str, tumour_categories=None) -> CocoSet:
  """Parses and validates a COCO json, once per (path, mtime, size, categories)."""
  path = os.path.abspath(os.fspath(path))
  try:
    st = os.stat(path)
  except OSError as e:
    raise InputError(path, f'cannot read the COCO annotations: {e}') from None
  categories = None if tumour_categories is None else tuple(tumour_categories)
  return _parse(path, st.st_mtime_ns, st.st_size, categories)


@functools.lru_cache(maxsize=16)
def _parse(path: str, mtime_ns: int, size: int, tumour_categories) -> CocoSet:
  del mtime_ns, size      # cache keys only
  data = read_json_object(path, 'the COCO annotations',
                          '"images", "annotations" and "categories"')
  for key in ('images', 'annotations', 'categories'):
    if not isinstance(data.get(key, []), list):
      raise InputError(path, f'"{key}" must be a list')
  if 'images' not in data:
    raise InputError(path, 'has no "images" list')
  tumour, background = _categories(data.get('categories', []), path,
                                   tumour_categories)
  images = _images(data['images'], path)
  shapes = {i: [] for i in images}
  for i, ann in enumerate(data.get('annotations', [])):
    where = f'annotations[{i}]'
    if not isinstance(ann, dict):
      raise InputError(path, f'{where} must be an object')
    if 'id' in ann:
      where += f' (id {ann["id"]})'
    image_id, category = ann.get('image_id'), ann.get('category_id')
    if image_id not in images:
      raise InputError(path, f'{where} points to image_id {image_id!r}, which '
                       'is not in "images"')
    if category not in tumour and category not in background:
      raise InputError(path, f'{where} has category_id {category!r}, which is '
                       'not in "categories"')
    if category in tumour:
      _, height, width = images[image_id]
      shapes[image_id].append(_shape(ann, height, width, where, path))
  folder = os.path.dirname(path)
  out = {}
  for image_id, (file_name, height, width) in images.items():
    out[file_name] = CocoImage(
        file_name=file_name,
        path=os.path.normpath(os.path.join(folder, file_name)),
        height=height, width=width, shapes=tuple(shapes[image_id]))
  return CocoSet(path=path, images=out, tumour_categories=tumour,
                 background_categories=background)


def _categories(entries: list, path: str, tumour_categories=None):
  """(tumour id -> name, not-tumour id -> name)."""
  tumour, background = {}, {}
  for i, cat in enumerate(entries):
    if not isinstance(cat, dict) or 'id' not in cat:
      raise InputError(path, f'categories[{i}] must be an object with "id" and '
                       '"name"')
    name = str(cat.get('name', ''))
    (tumour if is_tumour_category(name, tumour_categories)
     else background)[cat['id']] = name
  return tumour, background


def _images(entries: list, path: str) -> dict:
  """image id -> (file_name, height, width), checked."""
  images, names = {}, set()
  for i, img in enumerate(entries):
    where = f'images[{i}]'
    if not isinstance(img, dict):
      raise InputError(path, f'{where} must be an object')
    name, h, w = img.get('file_name'), img.get('height'), img.get('width')
    if not isinstance(name, str) or not name:
      raise InputError(path, f'{where} has no "file_name"')
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (h, w)):
      raise InputError(path, f'{where} ({name}) needs positive integer '
                       f'"height" and "width", got {h!r}, {w!r}')
    if img.get('id') in images:
      raise InputError(path, f'{where} ({name}) repeats image id {img["id"]!r}')
    if name in names:
      raise InputError(path, f'{where} repeats file_name {name!r}')
    names.add(name)
    images[img.get('id')] = (name, h, w)
  return images


def _numbers(values: Any, where: str, path: str) -> tuple[float, ...]:
  """A list of finite numbers as a tuple of floats."""
  if not isinstance(values, list) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    raise InputError(path, f'{where} must be a list of numbers')
  out = tuple(float(v) for v in values)
  if not all(math.isfinite(v) for v in out):
    raise InputError(path, f'{where} holds NaN/Inf coordinates')
  return out


def _check_inside(xs, ys, height, width, where, path):
  """InputError if a coordinate lies outside the image by > COORD_TOL."""
  lo = -COORD_TOL
  if (min(xs) < lo or max(xs) > width + COORD_TOL or min(ys) < lo or
      max(ys) > height + COORD_TOL):
    raise InputError(path, f'{where} has coordinates outside the {width}x'
                     f'{height} image: x in [{min(xs):g}, {max(xs):g}], y in '
                     f'[{min(ys):g}, {max(ys):g}]')


def _shape(ann: dict, height: int, width: int, where: str, path: str) -> Shape:
  """The geometry of one tumour annotation, checked against the image size."""
  seg = ann.get('segmentation')
  if isinstance(seg, dict):
    return _rle(seg, height, width, where, path)
  if seg is not None and not isinstance(seg, list):
    raise InputError(path, f'{where} "segmentation" must be polygons or RLE')
  if seg and not isinstance(seg[0], list):
    seg = [seg]                       # one flat polygon [x1, y1, ...]
  polygons = [p for p in (seg or []) if p != []]
  if polygons:
    out = []
    for k, poly in enumerate(polygons):
      coords = _numbers(poly, f'{where} polygon {k}', path)
      if len(coords) % 2 or len(coords) < 6:
        raise InputError(path, f'{where} polygon {k} has {len(coords)} '
                         'coordinates: a polygon needs an even number, at '
                         'least 6 (3 points)')
      _check_inside(coords[0::2], coords[1::2], height, width, where, path)
      out.append(coords)
    return Shape('polygons', tuple(out), where)
  if 'bbox' not in ann:
    raise InputError(path, f'{where} has neither a segmentation nor a bbox')
  box = _numbers(ann['bbox'], f'{where} "bbox"', path)
  if len(box) != 4 or box[2] < 0 or box[3] < 0:
    raise InputError(path, f'{where} "bbox" must be [x, y, width, height] '
                     f'with sizes >= 0, got {list(box)}')
  x, y, w, h = box
  _check_inside((x, x + w), (y, y + h), height, width, where, path)
  return Shape('box', box, where)


def _rle(seg: dict, height: int, width: int, where: str, path: str) -> Shape:
  """A checked RLE segmentation (its size must be the image's)."""
  size, counts = seg.get('size'), seg.get('counts')
  if list(size or ()) != [height, width]:
    raise InputError(path, f'{where} RLE "size" {size!r} differs from the '
                     f'image size [{height}, {width}]')
  if isinstance(counts, str) and counts:
    return Shape('rle', (counts,), where)
  if isinstance(counts, list):
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
               for c in counts) or sum(counts) != height * width:
      raise InputError(path, f'{where} RLE "counts" must be non-negative '
                       f'integers summing to {height * width} pixels')
    return Shape('rle', (tuple(counts),), where)
  raise InputError(path, f'{where} RLE "counts" must be a list or a string')


def render_mask(image: CocoImage, path: str) -> np.ndarray:
  """The union of `image.shapes` as a uint8 (H, W) 0/1 mask (pycocotools)."""
  mask_utils = formats.require('pycocotools.mask', 'formats', path)
  h, w = image.height, image.width
  rles = []
  for shape in image.shapes:
    try:
      if shape.kind == 'polygons':
        rles.extend(mask_utils.frPyObjects([list(p) for p in shape.data], h, w))
      elif shape.kind == 'box':
        rles.extend(mask_utils.frPyObjects(
            np.asarray([shape.data], np.float64), h, w))
      elif isinstance(shape.data[0], str):
        rles.append({'size': [h, w], 'counts': shape.data[0].encode('ascii')})
      else:
        rles.append(mask_utils.frPyObjects(
            {'size': [h, w], 'counts': list(shape.data[0])}, h, w))
    except (TypeError, ValueError, UnicodeEncodeError) as e:
      raise InputError(path, f'{shape.where} cannot be rasterised: {e}'
                       ) from None
  if not rles:
    return np.zeros((h, w), np.uint8)
  try:
    with warnings.catch_warnings():   # pycocotools' numpy 2 copy= notice
      warnings.filterwarnings('ignore', '__array__ implementation',
                              DeprecationWarning)
      mask = mask_utils.decode(mask_utils.merge(rles, intersect=False))
  except (TypeError, ValueError) as e:
    raise InputError(path, f'cannot rasterise the shapes of {image.file_name}: '
                     f'{e}') from None
  return (mask > 0).astype(np.uint8)


def _reason(e: Exception) -> str:
  """An exception as one line of text."""
  return ' '.join(str(e).split()) or type(e).__name__


def _open_image(path: str):
  """A lazily opened Pillow image."""
  image_mod = formats.require('PIL.Image', 'formats', path)
  if not os.path.isfile(path):
    raise InputError(path, 'cannot read the image: the file does not exist')
  try:
    return image_mod.open(path)
  except _IMAGE_ERRORS as e:
    raise InputError(path, f'cannot read the image: {_reason(e)}') from None


def tint_scores(rgb: np.ndarray) -> tuple[float, np.ndarray]:
  """How far a uint8 (H, W, 3) image is from one tinted grey signal.

  Returns:
    The lowest pairwise correlation of the channels (0 if one is constant),
    and (H * W,) per pixel the spread (max - min) of the channels of its
    residual off the first principal axis of the RGB values (a line through
    their mean): the channel spread left after removing the fitted tint.
  """
  x = rgb.reshape(-1, 3).astype(np.float64)
  centred = x - x.mean(axis=0)
  lowest = 0.0
  if np.all(centred.std(axis=0) > 0):
    corr = np.corrcoef(centred, rowvar=False)
    lowest = float(min(corr[0, 1], corr[0, 2], corr[1, 2]))
  axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
  residual = centred - np.outer(centred @ axis, axis)
  return lowest, residual.max(axis=1) - residual.min(axis=1)


def _check_grey(rgb: np.ndarray, mode: str, path: str, grey_tolerance: float,
                max_colour_fraction: float) -> bool:
  """False if a uint8 (H, W, 3) image is grey, True if a tinted grey;
  InputError if neither (module docstring)."""
  channels = rgb.astype(np.int16)
  spread = channels.max(axis=-1) - channels.min(axis=-1)
  colour = float(np.mean(spread > grey_tolerance))
  if colour <= max_colour_fraction:
    return False
  correlation, off_line = tint_scores(rgb)
  off = float(np.mean(off_line > grey_tolerance))
  if correlation >= TINT_CORRELATION and off <= max_colour_fraction:
    return True
  raise InputError(path, f'is a colour image ({mode}: {colour:.1%} of the '
                   f'pixels have channels more than {grey_tolerance:g} '
                   f'levels apart, up to {int(spread.max())}; not a tinted '
                   f'grey: channel correlation {correlation:.2f}, {off:.1%} '
                   'of the pixels off one tint); the COCO reader expects '
                   'grey images (tolerance: config.data.formats.coco.'
                   'grey_tolerance and max_colour_fraction)')


def take_tinted() -> list[str]:
  """The tinted grey images read (as grey) since the last call; forgets them."""
  paths = list(_TINTED)
  _TINTED.clear()
  return paths


def tinted_message(paths: Sequence[str], total: int | None = None) -> str:
  """One warning line for `take_tinted()`'s paths: '4 of 500 images ...'."""
  of = '' if total is None else f' of {total}'
  return (f'{len(paths)}{of} images are grey with a colour tint (channels '
          'moving together) and were read as grey (their luminance); '
          f'first: {paths[0]}')


def read_grey(path: str, grey_tolerance: float = DEFAULT_OPTIONS['grey_tolerance'],
              max_colour_fraction: float = DEFAULT_OPTIONS['max_colour_fraction']
              ) -> np.ndarray:
  """An image file as one float32 (H, W) grey channel (see the module doc)."""
  with _open_image(path) as im:
    try:
      im.load()
      if im.mode == '1':
        im = im.convert('L')
      elif im.mode in ('LA', 'La'):
        im = im.getchannel('L')
      elif im.mode not in ('L', 'I', 'F') and not im.mode.startswith('I;16'):
        rgb = im.convert('RGB')
        if _check_grey(np.asarray(rgb), im.mode, path, grey_tolerance,
                       max_colour_fraction):
          _TINTED[path] = None
        im = rgb.convert('L')
      data = np.asarray(im, np.float32)
    except _IMAGE_ERRORS as e:
      raise InputError(path, f'cannot read the image: {_reason(e)}') from None
  if data.ndim != 2:
    raise InputError(path, f'expected a 2D grey image, got shape {data.shape}')
  checks.check_finite(data, path)
  return data


def _entry(case: Case) -> CocoImage:
  """The json entry of a case's image."""
  coco = read_annotations(case.label, dict(case.options).get('tumour_categories'))
  image = coco.images.get(case.key)
  if image is None:
    raise InputError(case.label, f'lists no image {case.key!r} (case '
                     f'{case.case_id}); the file changed since discovery')
  return image


def check(case: Case, modalities: Sequence[str]) -> tuple[int, int, int]:
  """The image exists, opens, and has the json's size; returns (H, W, 1)."""
  del modalities      # one grey channel answers any single modality
  image = _entry(case)
  with _open_image(image.path) as im:
    width, height = im.size
  if (height, width) != (image.height, image.width):
    raise InputError(image.path, f'is {width}x{height} (width x height) but '
                     f'{case.label} says {image.width}x{image.height}')
  return image.height, image.width, 1


def load(case: Case, modalities: Sequence[str]) -> Volume:
  """Image (H, W, 1, 1) float32 and mask (H, W, 1) uint8 in {0, 1}."""
  check(case, modalities)
  image = _entry(case)
  options = dict(case.options)
  grey = read_grey(image.path,
                   options.get('grey_tolerance', DEFAULT_OPTIONS['grey_tolerance']),
                   options.get('max_colour_fraction',
                               DEFAULT_OPTIONS['max_colour_fraction']))
  if grey.shape != (image.height, image.width):
    raise InputError(image.path, f'decodes to {grey.shape} (H, W) but '
                     f'{case.label} says ({image.height}, {image.width})')
  mask = checks.check_label(render_mask(image, case.label), case, case.label)
  return Volume(
      image=grey[:, :, None, None],
      label=mask[:, :, None],
      affine=np.eye(4),
      header=None,
      case_id=case.case_id,
      modalities=tuple(modalities))
