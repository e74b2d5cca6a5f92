"""The COCO reader (seed 001's Roboflow export) against independent references.

A real COCO set is written in tmp_path: train/ valid/ test/ folders of grey
images (Pillow) and `_annotations.coco.json` files, from FLAIR slices of
tcga_4mod (or synthetic slices when the data is absent). Masks are compared
with an independent rasterisation (matplotlib's point-in-polygon on pixel
centres: exact except where a centre lies within 0.25 px of an edge), with
the RLE/box they were written from (exact), and with pycocotools' own
COCO.annToMask (exact).
"""

import functools
import json
import os
import sys

from matplotlib.path import Path as MplPath
import numpy as np
from PIL import Image
import pytest
from scipy.spatial import ConvexHull

from jaxseg.data import pipeline
from jaxseg.data import sources
from jaxseg.data.dataset import split_cases
from jaxseg.data.formats import coco
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA, load_config

DATA = SAMPLE_DATA
CASE = DATA / 'tcga_4mod' / 'TCGA-FG-6692' / 'TCGA-FG-6692'
SIZE = 64
ANN = '_annotations.coco.json'
# Roboflow's categories: the parent 'Tumor' and the classes '0' and '1'.
ROBOFLOW_CATS = [dict(id=0, name='Tumor', supercategory='none'),
                 dict(id=1, name='0', supercategory='Tumor'),
                 dict(id=2, name='1', supercategory='Tumor')]
WORDS_CATS = [dict(id=1, name='no tumor', supercategory='none'),
              dict(id=2, name='tumor', supercategory='none')]


# ------------------------------------------------------------------ slices


@functools.lru_cache(maxsize=None)
def _real_slices():
  """Three 64x64 uint8 FLAIR slices around the largest tumour section, masks."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  flair = np.asarray(nib.load(f'{CASE}_flair.nii.gz').dataobj, np.float32)
  seg = np.asarray(nib.load(f'{CASE}_seg.nii.gz').dataobj) > 0
  z0 = int(np.argmax(seg.sum(axis=(0, 1))))
  i, j = (int(round(v)) for v in np.argwhere(seg[:, :, z0]).mean(axis=0))
  i = min(max(i - SIZE // 2, 0), 240 - SIZE)
  j = min(max(j - SIZE // 2, 0), 240 - SIZE)
  out = []
  for z in (z0, z0 - 6, z0 + 6):
    img = flair[i:i + SIZE, j:j + SIZE, z]
    img = np.round(255 * (img - img.min()) / (img.max() - img.min()))
    out.append((img.astype(np.uint8), seg[i:i + SIZE, j:j + SIZE, z]))
  return tuple(out)


def _synthetic_slices():
  """Three 64x64 uint8 slices: a noisy bright disc with an elliptic 'tumour'."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
  out = []
  for k, (cy, cx, ry, rx) in enumerate([(30, 26, 9, 13), (36, 38, 6, 8),
                                        (24, 34, 11, 7)]):
    brain = (yy - 32) ** 2 + (xx - 32) ** 2 < 28 ** 2
    tumour = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    img = 90 * brain + 120 * tumour + rng.normal(0, 8, brain.shape) + 10 * k
    out.append((np.clip(np.round(img), 0, 255).astype(np.uint8), tumour))
  return tuple(out)


@pytest.fixture(params=['real', 'synthetic'])
def slices(request):
  if request.param == 'synthetic':
    return _synthetic_slices()
  if not DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
  return _real_slices()


# ----------------------------------------------------------- the COCO set


def _hull_polygon(mask):
  """The convex hull of the mask's pixel squares as a COCO polygon."""
  i, j = np.nonzero(mask)
  corners = np.concatenate([np.stack([j + dx, i + dy], 1)
                            for dx in (0, 1) for dy in (0, 1)]).astype(float)
  hull = ConvexHull(corners)
  return [float(v) for v in corners[hull.vertices].ravel()]


# A concave hand-drawn 'L' and a triangle, non-integer vertices: one
# annotation of two parts.
HAND = [[6.3, 40.2, 20.7, 40.2, 20.7, 52.4, 30.1, 52.4, 30.1, 60.6, 6.3, 60.6],
        [40.5, 5.2, 58.8, 12.9, 44.1, 22.3]]
# Pixel centres closer than this (px) to a polygon edge may differ from
# matplotlib's point-in-polygon.
EDGE_TOL = 0.25
BOX = [8, 6, 12, 9]          # x, y, w, h: an integer box, rows 6..14, cols 8..19


def _rle_counts(mask):
  """Uncompressed COCO RLE counts (column-major, zeros first), by hand."""
  flat = np.asarray(mask, np.uint8).ravel(order='F')
  change = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  counts = np.diff(bounds).tolist()
  return counts if flat[0] == 0 else [0] + counts


def _write_image(path, img, ext):
  rgb = np.repeat(img[:, :, None], 3, axis=2)
  Image.fromarray(rgb).save(path, quality=95) if ext == 'jpg' else \
      Image.fromarray(rgb).save(path)


def _write_split(folder, images, annotations, categories, ext):
  os.makedirs(folder, exist_ok=True)
  entries = []
  for k, (name, img) in enumerate(images):
    _write_image(os.path.join(folder, f'{name}.{ext}'), img, ext)
    entries.append(dict(id=k, file_name=f'{name}.{ext}', height=img.shape[0],
                        width=img.shape[1], license=1))
  for n, ann in enumerate(annotations):
    ann.setdefault('id', n)
    ann.setdefault('iscrowd', 0)
  with open(os.path.join(folder, ANN), 'w') as f:
    json.dump(dict(info={}, licenses=[], categories=categories,
                   images=entries, annotations=annotations), f)


def build_set(root, slices, ext='png'):
  """Writes the set; returns {case id: expected geometry} for the tests."""
  import pycocotools.mask as mask_utils  # pylint: disable=g-import-not-at-top
  (img_a, tum_a), (img_b, tum_b), (img_c, tum_c) = slices
  hull = _hull_polygon(tum_a)
  _write_split(
      os.path.join(root, 'train'),
      [('a', img_a), ('b', img_b[::-1].copy()), ('c', img_c)],
      [dict(image_id=0, category_id=2, segmentation=[hull], bbox=[0, 0, 1, 1]),
       # a '0' (no tumour) annotation over the image: not in the mask
       dict(image_id=0, category_id=1, segmentation=[[0, 0, 64, 0, 64, 64]]),
       dict(image_id=1, category_id=2, segmentation=HAND)],
      ROBOFLOW_CATS, ext)
  encoded = mask_utils.encode(np.asfortranarray(tum_c.astype(np.uint8)))
  _write_split(
      os.path.join(root, 'valid'), [('d', img_c)],
      [dict(image_id=0, category_id=2, segmentation=dict(
          size=[SIZE, SIZE], counts=encoded['counts'].decode('ascii'))),
       dict(image_id=0, category_id=2, segmentation=[], bbox=BOX),
       dict(image_id=0, category_id=1, segmentation=[], bbox=[40, 40, 20, 20])],
      WORDS_CATS, ext)
  _write_split(
      os.path.join(root, 'test'), [('a', img_b), ('e', img_a)],
      [dict(image_id=0, category_id=2, segmentation=dict(
          size=[SIZE, SIZE], counts=_rle_counts(tum_b)), iscrowd=1)],
      ROBOFLOW_CATS, ext)
  box = np.zeros((SIZE, SIZE), bool)
  box[BOX[1]:BOX[1] + BOX[3], BOX[0]:BOX[0] + BOX[2]] = True
  return {
      'train_a': dict(image=img_a, polygons=[hull]),
      'b': dict(image=img_b[::-1], polygons=HAND),
      'c': dict(image=img_c, exact=np.zeros((SIZE, SIZE), bool)),
      'd': dict(image=img_c, exact=tum_c | box),
      'test_a': dict(image=img_b, exact=tum_b),
      'e': dict(image=img_a, exact=np.zeros((SIZE, SIZE), bool)),
  }


# ------------------------------------------------ independent rasterisation


def _centres():
  yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
  return np.stack([xx.ravel(), yy.ravel()], 1)


def _inside(polygons):
  """Pixels whose centre is inside any polygon (matplotlib)."""
  out = np.zeros(SIZE * SIZE, bool)
  for poly in polygons:
    out |= MplPath(np.reshape(poly, (-1, 2))).contains_points(_centres())
  return out.reshape(SIZE, SIZE)


def _edge_distance(polygons):
  """Distance of every pixel centre to the nearest polygon edge."""
  p = _centres()
  best = np.full(len(p), np.inf)
  for poly in polygons:
    v = np.reshape(poly, (-1, 2))
    for a, b in zip(v, np.roll(v, -1, axis=0)):
      t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
      best = np.minimum(best, np.linalg.norm(p - a - t[:, None] * (b - a),
                                             axis=1))
  return best.reshape(SIZE, SIZE)


def _by_id(root):
  return {c.case_id: c for c in sources.discover_cases(str(root))}


# ------------------------------------------------------------------- tests


def test_discover_follows_the_split_folders(tmp_path, slices):
  build_set(tmp_path, slices)
  cases = sources.discover_cases(str(tmp_path))
  ids = [c.case_id for c in cases]
  assert ids == sorted(['train_a', 'b', 'c', 'd', 'test_a', 'e'])
  by = {c.case_id: c for c in cases}
  assert by['b'].split == 'training' and by['d'].split == 'validation'
  assert by['test_a'].split == 'test' and by['train_a'].split == 'training'
  case = by['d']
  assert case.reader == 'coco' and case.key == 'd.png'
  assert case.images == {'grey': str(tmp_path / 'valid' / 'd.png')}
  assert case.label == str(tmp_path / 'valid' / ANN) == case.source
  assert case.scheme.values == (0, 1) and case.scheme.binary
  split = split_cases(cases, (0.7, 0.15, 0.15), 0, str(tmp_path))
  assert split == dict(train=['b', 'c', 'train_a'], val=['d'],
                       test=['e', 'test_a'])


def test_png_images_read_exactly(tmp_path, slices):
  expected = build_set(tmp_path, slices)
  for case_id, case in _by_id(tmp_path).items():
    assert sources.check_case(case, ('grey',)) == (SIZE, SIZE, 1)
    vol = sources.load_case(case, ('grey',))
    assert vol.image.shape == (SIZE, SIZE, 1, 1)
    assert vol.image.dtype == np.float32
    np.testing.assert_array_equal(vol.image[:, :, 0, 0],
                                  expected[case_id]['image'].astype(np.float32))
    assert vol.label.shape == (SIZE, SIZE, 1) and vol.label.dtype == np.uint8
    np.testing.assert_array_equal(vol.affine, np.eye(4))
    assert vol.case_id == case_id and vol.header is None


def test_masks_match_an_independent_rasterisation(tmp_path, slices):
  expected = build_set(tmp_path, slices)
  cases = _by_id(tmp_path)
  for case_id, want in expected.items():
    got = sources.load_case(cases[case_id], ('grey',)).label[:, :, 0]
    assert set(np.unique(got)) <= {0, 1}
    if 'exact' in want:                      # RLE, box, background-only
      np.testing.assert_array_equal(got, want['exact'], err_msg=case_id)
      continue
    ref = _inside(want['polygons'])
    # pycocotools decides pixels whose centre lies on or next to an edge its
    # own way; every other pixel must agree (a one-pixel shift fails here).
    near = _edge_distance(want['polygons']) < EDGE_TOL
    np.testing.assert_array_equal(got[~near], ref[~near], err_msg=case_id)
    assert ref.sum() > 20 and (~near & ref).sum() > 20   # real shapes compared


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_masks_match_pycocotools_ann_to_mask(tmp_path, slices):
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  build_set(tmp_path, slices)
  cases = _by_id(tmp_path)
  for folder in ('train', 'valid', 'test'):
    api = COCO(str(tmp_path / folder / ANN))
    tumour = {c['id'] for c in api.loadCats(api.getCatIds())
              if c['name'] in ('Tumor', '1', 'tumor')}
    for img in api.loadImgs(api.getImgIds()):
      ref = np.zeros((img['height'], img['width']), np.uint8)
      for ann in api.loadAnns(api.getAnnIds(imgIds=img['id'])):
        if ann['category_id'] not in tumour:
          continue
        if ann['segmentation']:
          ref |= api.annToMask(ann)
        else:                       # our documented bbox fallback
          x, y, w, h = ann['bbox']
          ref[y:y + h, x:x + w] = 1
      case = next(c for c in cases.values()
                  if c.key == img['file_name'] and folder in c.label)
      got = sources.load_case(case, ('grey',)).label[:, :, 0]
      np.testing.assert_array_equal(got, ref, err_msg=img['file_name'])


def test_jpg_images(tmp_path):
  slices = _synthetic_slices()
  build_set(tmp_path, slices, ext='jpg')
  case = _by_id(tmp_path)['c']
  # a single grey channel answers any single requested modality
  vol = sources.load_case(case, ('flair',))
  with Image.open(case.images['grey']) as im:
    assert im.mode == 'RGB'
    rgb = np.asarray(im)
  np.testing.assert_array_equal(vol.image[:, :, 0, 0], rgb[..., 0])
  assert np.abs(vol.image[:, :, 0, 0] - slices[2][0]).mean() < 3.0
  # a one-channel ('L') JPEG reads as itself
  Image.fromarray(slices[0][0]).save(case.images['grey'], quality=95)
  with Image.open(case.images['grey']) as im:
    assert im.mode == 'L'
    grey = np.asarray(im)
  vol = sources.load_case(case, ('grey',))
  np.testing.assert_array_equal(vol.image[:, :, 0, 0], grey)
  with pytest.raises(InputError, match=r"no 'flair' channel \(has: grey\)"):
    sources.load_case(case, ('flair', 't1'))


def test_near_grey_rgb_reads_as_its_luminance(tmp_path):
  build_set(tmp_path, _synthetic_slices())
  case = _by_id(tmp_path)['c']
  grey = _synthetic_slices()[2][0].astype(np.int16)
  tol = coco.DEFAULT_OPTIONS['grey_tolerance'] // 2
  wobble = np.random.default_rng(1).integers(-tol, tol + 1,
                                             (SIZE, SIZE, 2))
  rgb = np.stack([grey, grey + wobble[..., 0], grey + wobble[..., 1]], -1)
  rgb = np.clip(rgb, 0, 255).astype(np.uint8)
  Image.fromarray(rgb).save(case.images['grey'])
  got = sources.load_case(case, ('grey',)).image[:, :, 0, 0]
  luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])   # ITU-R 601
  np.testing.assert_allclose(got, luma, atol=0.5 + 1e-6)


def _exported_jpeg(path, grey):
  """A grey slice as real exports store it: RGB with a faint, smooth colour
  cast (up to 4 levels per channel), a small red mark in a corner, JPEG at
  quality 75 with 4:2:0 chroma subsampling."""
  yy, xx = np.mgrid[:grey.shape[0], :grey.shape[1]]
  cast = np.stack([4 * np.sin(xx / 40), 4 * np.cos(yy / 50),
                   -4 * np.sin((xx + yy) / 60)], -1)
  rgb = np.clip(grey[:, :, None] + cast, 0, 255).round().astype(np.uint8)
  rgb[2:8, 2:12] = (255, 40, 40)           # 60 of 65,536 pixels
  Image.fromarray(rgb).save(path, quality=75, subsampling=2)


def test_exported_jpegs_with_chroma_noise_and_a_mark_read_as_grey(tmp_path):
  slices = _synthetic_slices()
  build_set(tmp_path, slices, ext='jpg')
  case = _by_id(tmp_path)['c']
  big = np.kron(slices[2][0], np.ones((4, 4), np.uint8))    # 256 x 256
  _exported_jpeg(case.images['grey'], big)
  coco.take_tinted()
  _edit_json(tmp_path, 'train', lambda d: [
      im.update(height=256, width=256) for im in d['images']
      if im['file_name'] == 'c.jpg'])
  case = _by_id(tmp_path)['c']
  with Image.open(case.images['grey']) as im:
    rgb = np.asarray(im.convert('RGB')).astype(np.int16)
  spread = rgb.max(-1) - rgb.min(-1)
  # As such exports are: most pixels 4-10 levels apart, the mark far more.
  assert spread.max() > 100 and 4 <= np.percentile(spread, 98) <= 10
  got = sources.load_case(case, ('grey',)).image[:, :, 0, 0]
  luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(got, luma, atol=0.5 + 1e-6)
  # The tolerance is the config's: a strict one refuses the same file.
  assert coco.take_tinted() == []        # grey, not a tinted grey
  config = load_config('coco_cnn_simple')
  config.data.formats.coco.grey_tolerance = 2
  strict = sources.discover_cases(str(tmp_path), config.data.formats)
  with pytest.raises(InputError, match='colour image.*grey_tolerance'):
    sources.load_case({c.case_id: c for c in strict}['c'], ('grey',))


def test_a_colour_photograph_is_still_refused(tmp_path):
  build_set(tmp_path, _synthetic_slices())
  case = _by_id(tmp_path)['c']
  yy, xx = np.mgrid[:SIZE, :SIZE]
  rgb = np.stack([yy * 4, xx * 4, 255 - yy * 2], -1).astype(np.uint8)
  Image.fromarray(rgb).save(case.images['grey'])
  with pytest.raises(InputError, match=r'colour image \(RGB: 9\d\.\d% of the'):
    sources.load_case(case, ('grey',))


# ------------------------------------------------- tinted grey exports


@functools.lru_cache(maxsize=None)
def _grey_mri(kind):
  """A uint8 grey slice with black margins, as the export's images are.

  'real': tcga_4mod's FLAIR on its largest tumour section, 240 x 240 padded
  to 336 x 336; 'synthetic': a 64 x 64 synthetic slice at 4x, padded to 512.
  Either way ~15 % of the pixels are brighter than 63.
  """
  if kind == 'synthetic':
    big = np.kron(_synthetic_slices()[2][0], np.ones((4, 4), np.uint8))
    return np.pad(big, 128)
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  flair = np.asarray(nib.load(f'{CASE}_flair.nii.gz').dataobj, np.float32)
  seg = np.asarray(nib.load(f'{CASE}_seg.nii.gz').dataobj) > 0
  z0 = int(np.argmax(seg.sum(axis=(0, 1))))
  img = np.clip(flair[:, :, z0], 0, None)
  return np.pad(np.round(255 * img / img.max()).astype(np.uint8), 48)


@pytest.fixture(params=['real', 'synthetic'])
def grey_mri(request):
  if request.param == 'real' and not DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
  return _grey_mri(request.param)


# The export's blue tint: R = 0.8 g, G = 0.85 g, B = 0.85 g + 52 g / 255.
TINT = (0.8, 0.85, 0.85 + 52 / 255)


def _tinted(grey):
  rgb = grey[:, :, None].astype(np.float64) * np.array(TINT)
  return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _one_image_set(root, rgb, quality=90):
  """`root` holding one RGB JPEG and its json; returns its case."""
  os.makedirs(root, exist_ok=True)
  Image.fromarray(rgb).save(root / 'x.jpg', quality=quality)
  h, w = rgb.shape[:2]
  with open(root / ANN, 'w') as f:
    json.dump(dict(categories=ROBOFLOW_CATS, annotations=[], images=[
        dict(id=0, file_name='x.jpg', height=h, width=w)]), f)
  return sources.discover_cases(str(root))[0]


def _decoded(path):
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB')).astype(np.float64)


def _lowest_correlation(rgb):
  c = np.corrcoef(rgb.reshape(-1, 3), rowvar=False)
  return min(c[0, 1], c[0, 2], c[1, 2])


@pytest.mark.parametrize('quality', [80, 95])
def test_a_tinted_grey_export_reads_as_grey_and_is_counted(tmp_path, grey_mri,
                                                           quality):
  case = _one_image_set(tmp_path, _tinted(grey_mri), quality)
  rgb = _decoded(case.images['grey'])
  spread = rgb.max(-1) - rgb.min(-1)
  # As the 4 images of the real export: ~15 % of the pixels more than 16
  # levels apart (the grey check allows 2 %), channels correlating > 0.95.
  assert 0.12 < np.mean(spread > 16) < 0.18 and spread.max() >= 50
  assert _lowest_correlation(rgb) > 0.95
  coco.take_tinted()
  got = sources.load_case(case, ('grey',)).image[:, :, 0, 0]
  got_again = sources.load_case(case, ('grey',)).image[:, :, 0, 0]
  # The luminance, as for grey RGB images ...
  luma = rgb @ np.array([0.299, 0.587, 0.114])          # ITU-R 601
  np.testing.assert_allclose(got, luma, atol=0.5 + 1e-6)
  np.testing.assert_array_equal(got_again, got)
  # ... which of this tint is 0.858 g (B unclipped below g = 242).
  k = float(np.dot([0.299, 0.587, 0.114], TINT))
  assert abs(k - 0.858) < 5e-4
  assert np.abs(got - k * grey_mri).mean() < 1.0
  # Counted once per image, whatever the reads; taking forgets.
  assert coco.take_tinted() == [case.images['grey']]
  assert coco.take_tinted() == []


def _gradients(grey):
  """Channels with different content: the slice, plus two smooth ramps."""
  g = grey.astype(np.float64)
  yy, xx = np.mgrid[:g.shape[0], :g.shape[1]] / g.shape[0]
  rgb = np.stack([g, 0.5 * g + 100 * xx,
                  0.7 * g + 60 * np.sin(6 * yy) + 60], -1)
  return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _inverted(grey):
  """One grey signal, but blue runs against red and green."""
  return np.stack([grey, grey, 255 - grey], -1)


def _red_box(grey):
  """A grey slice with a burnt-in 40 % red box over 80 x 80 pixels."""
  rgb = np.repeat(grey[:, :, None], 3, -1).astype(np.float64)
  c = grey.shape[0] // 2
  box = (slice(c - 40, c + 40), slice(c - 40, c + 40))
  rgb[box] = 0.6 * rgb[box] + 0.4 * np.array([255, 0, 0])
  return np.round(rgb).astype(np.uint8)


@pytest.mark.parametrize('make, correlation', [
    (_gradients, (0.2, 0.6)),
    (_inverted, (-1.0, -0.9)),    # channels on one line: only the sign refuses
    (_red_box, (0.9, 0.97)),      # correlation alone would accept it
])
def test_colour_content_is_still_refused(tmp_path, grey_mri, make, correlation):
  case = _one_image_set(tmp_path, make(grey_mri))
  lo, hi = correlation
  assert lo < _lowest_correlation(_decoded(case.images['grey'])) < hi
  coco.take_tinted()
  with pytest.raises(InputError, match=r'colour image \(RGB: .* not a tinted '
                     'grey: channel correlation') as e:
    sources.load_case(case, ('grey',))
  assert e.value.where == case.images['grey']
  assert coco.take_tinted() == []


def test_modality_boxes_are_not_tumour(tmp_path):
  """Exports that box each image's sequence ('T1', 'FLAIR'): not drawn."""
  cats = ROBOFLOW_CATS + [dict(id=3, name='T1', supercategory='Tumor'),
                          dict(id=4, name='FLAIR', supercategory='Tumor')]
  img, tumour = _synthetic_slices()[0]
  _write_split(tmp_path / 'train', [('a', img)], [
      dict(image_id=0, category_id=2, segmentation=[_hull_polygon(tumour)],
           bbox=[0, 0, 1, 1]),
      dict(image_id=0, category_id=3, segmentation=[], bbox=[0, 0, 20, 10]),
      dict(image_id=0, category_id=4, segmentation=[], bbox=[40, 50, 24, 14])],
      cats, 'png')
  (case,) = sources.discover_cases(str(tmp_path))
  label = sources.load_case(case, ('grey',)).label[:, :, 0]
  assert label[:10, :20].sum() == 0 and label[50:, 40:].sum() == 0
  hull_only = coco.render_mask(coco.read_annotations(case.label).images['a.png'],
                               case.label)
  np.testing.assert_array_equal(label, hull_only)
  # Naming the tumour categories draws exactly those.
  config = load_config('coco_cnn_simple')
  config.data.formats.coco.tumour_categories = ('1', 'T1')
  (case,) = sources.discover_cases(str(tmp_path), config.data.formats)
  label = sources.load_case(case, ('grey',)).label[:, :, 0]
  assert label[:10, :20].all() and label[50:, 40:].sum() == 0


def test_root_may_be_one_split_folder(tmp_path):
  build_set(tmp_path / 'set', _synthetic_slices())
  cases = sources.discover_cases(str(tmp_path / 'set' / 'valid'))
  assert [(c.case_id, c.split) for c in cases] == [('d', 'validation')]
  os.rename(tmp_path / 'set' / 'train', tmp_path / 'images')
  cases = sources.discover_cases(str(tmp_path / 'images'))
  assert [c.case_id for c in cases] == ['a', 'b', 'c']
  assert {c.split for c in cases} == {None}


@pytest.mark.parametrize('name,tumour', [
    ('Tumor', True), ('1', True), ('tumour', True), ('glioma', True),
    ('0', False), ('No Tumor', False), ('no-tumour', False),
    ('Non_Tumor', False), ('notumor', False), ('background', False),
    ('T1', False), ('t1c', False), ('FLAIR', False), ('T2-Flair', False),
    ('MRI', False)])
def test_category_names(name, tumour):
  assert coco.is_tumour_category(name) is tumour


def test_each_json_is_parsed_once(tmp_path):
  build_set(tmp_path, _synthetic_slices())
  coco._parse.cache_clear()  # pylint: disable=protected-access
  cases = sources.discover_cases(str(tmp_path))
  for case in cases:
    sources.load_case(case, ('grey',))
  info = coco._parse.cache_info()  # pylint: disable=protected-access
  assert info.misses == 3 and info.hits >= 2 * len(cases)
  path = tmp_path / 'valid' / ANN
  data = json.loads(path.read_text())
  data['annotations'] = data['annotations'][1:]       # drop the RLE
  path.write_text(json.dumps(data, indent=1))         # new size and mtime
  case = _by_id(tmp_path)['d']
  box = sources.load_case(case, ('grey',)).label[:, :, 0]
  assert box.sum() == BOX[2] * BOX[3]


# ---------------------------------------------------------------- bad input


def _edit_json(root, folder, edit):
  path = root / folder / ANN
  data = json.loads(path.read_text())
  edit(data)
  path.write_text(json.dumps(data))
  return str(path)


def _load_all(root):
  for case in sources.discover_cases(str(root)):
    sources.load_case(case, ('grey',))


def _malformed(root):
  path = root / 'valid' / ANN
  path.write_text(path.read_text()[:-30])
  return str(path), 'malformed JSON'


def _missing_image(root):
  os.remove(root / 'train' / 'b.png')
  return str(root / 'train' / 'b.png'), 'does not exist'


def _wrong_size(root):
  Image.fromarray(np.zeros((SIZE, SIZE + 2, 3), np.uint8)).save(
      root / 'train' / 'c.png')
  return str(root / 'train' / 'c.png'), '66x64'


def _unknown_image_id(root):
  def edit(d):
    d['annotations'][0]['image_id'] = 99
  return _edit_json(root, 'train', edit), 'image_id 99'


def _unknown_category(root):
  def edit(d):
    d['annotations'][0]['category_id'] = 7
  return _edit_json(root, 'test', edit), 'category_id 7'


def _outside(root):
  def edit(d):
    d['annotations'][2]['segmentation'][1][2] = 70.0
  return _edit_json(root, 'train', edit), 'outside the 64x64 image'


def _box_outside(root):
  def edit(d):
    d['annotations'][1]['bbox'] = [50, 50, 20, 4]
  return _edit_json(root, 'valid', edit), 'outside'


def _odd_polygon(root):
  def edit(d):
    d['annotations'][2]['segmentation'][1] = [1, 2, 3, 4, 5]
  return _edit_json(root, 'train', edit), 'even number'


def _rle_size(root):
  def edit(d):
    d['annotations'][0]['segmentation']['size'] = [64, 32]
  return _edit_json(root, 'test', edit), 'RLE "size"'


def _truncated_image(root):
  path = root / 'valid' / 'd.png'
  path.write_bytes(path.read_bytes()[:200])
  return str(path), 'cannot read the image'


def _not_an_image(root):
  path = root / 'valid' / 'd.png'
  path.write_text('hello')
  return str(path), 'cannot read the image'


def _colour_image(root):
  rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
  rgb[..., 0] = 200
  Image.fromarray(rgb).save(root / 'train' / 'c.png')
  return str(root / 'train' / 'c.png'), 'colour image'


@pytest.mark.parametrize('corrupt', [
    _malformed, _missing_image, _wrong_size, _unknown_image_id,
    _unknown_category, _outside, _box_outside, _odd_polygon, _rle_size,
    _truncated_image, _not_an_image, _colour_image])
def test_bad_input_names_the_file(tmp_path, corrupt):
  build_set(tmp_path, _synthetic_slices())
  where, problem = corrupt(tmp_path)
  with pytest.raises(InputError) as e:
    _load_all(tmp_path)
  assert e.value.where == where
  assert problem in e.value.problem


def test_size_mismatch_is_found_by_check_case(tmp_path):
  build_set(tmp_path, _synthetic_slices())
  where, _ = _wrong_size(tmp_path)
  case = _by_id(tmp_path)['c']
  with pytest.raises(InputError, match='differs|says') as e:
    sources.check_case(case, ('grey',))
  assert e.value.where == where


def test_missing_pycocotools_names_the_extra(tmp_path, monkeypatch):
  build_set(tmp_path, _synthetic_slices())
  case = _by_id(tmp_path)['d']
  monkeypatch.setitem(sys.modules, 'pycocotools.mask', None)
  with pytest.raises(InputError, match=r'jaxseg\[formats\]'):
    sources.load_case(case, ('grey',))


# --------------------------------------------------------------- end to end


def test_prepare_split_accepts_coco_cases(tmp_path, slices):
  expected = build_set(tmp_path, slices)
  cases = sources.discover_cases(str(tmp_path))
  prepared = pipeline.prepare_split(
      cases, modalities=('grey',), image_size=32, label_mode='binary',
      background_ratio=1.0, min_brain_fraction=0.0, seed=0, dims=2,
      depth=None)
  assert prepared.images.shape == (len(cases), 32, 32, 1)
  assert prepared.targets.shape == (len(cases), 32, 32, 1)
  assert np.isfinite(prepared.images).all()
  assert prepared.slices == [(c.case_id, 0) for c in cases]
  has = prepared.targets.reshape(len(cases), -1).any(axis=1)
  for case, tumour in zip(cases, has):
    want = expected[case.case_id]
    assert tumour == bool(want['exact'].any() if 'exact' in want else True)
  tumour_records = [i for i in prepared.records if has[i]]
  assert len(tumour_records) == int(has.sum())
