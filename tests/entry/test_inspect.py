"""The dataset inspector (jaxseg/data/inspect.py) and the label-copy guard (jaxseg/data/checks.py).

References: hand-worked volumes (histograms, fractions, percentiles, a
rotated 2 mm affine), numpy on the NIfTI files as nibabel reads them, the
real BraTS labels of the sample data (which must not be flagged), and the
command line run as a user runs it.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxseg.data import checks
from jaxseg.data import dataset
from jaxseg import inspect as ins
from jaxseg.data import pipeline
from jaxseg.data import sources
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA

REPO = Path(__file__).resolve().parents[2]
DATA = SAMPLE_DATA
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
MODS = ('flair', 't1', 't1ce', 't2')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _volume(image, label, affine=None, case_id='X', mods=None):
  image = np.asarray(image, np.float32)
  mods = mods or tuple(f'c{i}' for i in range(image.shape[-1]))
  return sources.Volume(image=image, label=label,
                        affine=np.eye(4) if affine is None else affine,
                        header=None, case_id=case_id, modalities=mods)


def _brain_phantom(shape=(20, 18, 10), seed=0):
  """(H, W, D, 4) int-valued MR-like channels in an ellipsoid, and a tumour."""
  rng = np.random.default_rng(seed)
  h, w, d = shape
  x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing='ij')
  brain = x ** 2 + y ** 2 + z ** 2 < 0.8
  tumour = (x - 0.3) ** 2 + (y + 0.2) ** 2 + z ** 2 < 0.12
  image = rng.integers(80, 400, shape + (4,)).astype(np.float32)
  image[tumour, 0] += 150          # bright on FLAIR, as a real lesion
  image[~brain] = 0
  label = np.zeros(shape, np.uint8)
  label[tumour] = 2
  label[tumour & (x > 0.35)] = 4
  label[tumour & (x > 0.45)] = 1
  return image, label


# ------------------------------------------------------------ case summary


def test_case_summary_hand_worked():
  # 121 voxels: channel 0 holds 1..101 in the first 101, zero elsewhere;
  # channel 1 is 5 in voxel 110 only, so the brain is 102 voxels and
  # channel 0's brain values are 0, 1, ..., 101.
  c0 = np.zeros(121, np.float32)
  c0[:101] = np.arange(1, 102)
  c1 = np.zeros(121, np.float32)
  c1[110] = 5
  image = np.stack([c0, c1], -1).reshape(11, 11, 1, 2)
  label = np.zeros(121, np.uint8)
  label[:10] = 1
  label[50:55] = 2
  label = label.reshape(11, 11, 1)
  # 2 mm voxels, rotated 30 degrees about z, shifted.
  t = math.radians(30)
  rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0],
                  [0, 0, 1]])
  affine = np.eye(4)
  affine[:3, :3] = rot * 2.0
  affine[:3, 3] = (-90, 120, 7)
  row = ins.case_summary(_volume(image, label, affine, 'A', ('flair', 't1')),
                         label_values=(0, 1, 2, 4))
  assert row['case'] == 'A' and row['shape'] == [11, 11, 1]
  np.testing.assert_allclose(row['spacing'], [2.0, 2.0, 2.0], atol=1e-12)
  assert row['label_histogram'] == {0: 106, 1: 10, 2: 5, 4: 0}
  assert row['voxels'] == 121 and row['brain_voxels'] == 102
  assert row['tumour_voxels'] == 15
  assert row['tumour_fraction_brain'] == pytest.approx(15 / 102, abs=1e-12)
  assert row['tumour_fraction_all'] == pytest.approx(15 / 121, abs=1e-12)
  # Linear-interpolated percentiles of 0..101 (102 values): 1.01 and 99.99.
  flair = row['channels']['flair']
  assert (flair['min'], flair['max']) == (0.0, 101.0)
  assert flair['p1'] == pytest.approx(1.01, abs=1e-9)
  assert flair['p99'] == pytest.approx(99.99, abs=1e-9)
  # Channel 1 over the brain: 101 zeros and one 5.
  assert row['channels']['t1'] == dict(min=0.0, max=5.0, p1=0.0, p99=0.0)
  assert row['label_copy'] is None
  json.dumps(row)                       # plain Python numbers only


def test_case_without_label():
  image, _ = _brain_phantom()
  row = ins.case_summary(_volume(image, None))
  assert not row['labelled'] and row['label_histogram'] is None
  assert row['tumour_fraction_brain'] is None and row['label_copy'] is None


def test_dataset_summary_hand_worked():
  a = np.zeros((4, 4, 2, 1), np.float32)
  a[:2] = 1                              # brain: 16 of 32 voxels
  la = np.zeros((4, 4, 2), np.uint8)
  la[0, :2, 0] = 1                       # 2 voxels of 1
  la[1, :, 1] = 2                        # 4 voxels of 2
  b = np.ones((2, 2, 2, 1), np.float32)  # brain: all 8 voxels, no tumour
  lb = np.zeros((2, 2, 2), np.uint8)
  rows = [ins.case_summary(_volume(a, la, case_id='a'), (0, 1, 2, 4)),
          ins.case_summary(_volume(b, lb, np.diag([2., 2., 3., 1.]), 'b'),
                           (0, 1, 2, 4)),
          ins.case_summary(_volume(b, None, case_id='c')),
          dict(case='d', error='x: cannot read NIfTI'),
          # A label that is the brain mask: counted, left out of the balance.
          ins.case_summary(_volume(b, np.ones((2, 2, 2), np.uint8), case_id='e'))]
  s = ins.dataset_summary(rows)
  assert (s['cases'], s['labelled'], s['unreadable']) == (5, 3, ['d'])
  assert s['label_copies'] == ['e']
  assert s['shapes'] == {'4x4x2': 1, '2x2x2': 3}
  assert s['spacings'] == {'1x1x1': 3, '2x2x3': 1}
  assert s['label_values'] == [0, 1, 2]
  # 40 labelled voxels: 34 background, 2 of label 1, 4 of label 2.
  bal = s['class_balance']
  assert bal[0] == dict(voxels=34, fraction_all=34 / 40, fraction_tumour=None,
                        cases=2)
  assert bal[1] == dict(voxels=2, fraction_all=2 / 40, fraction_tumour=2 / 6,
                        cases=1)
  assert bal[2]['fraction_tumour'] == 4 / 6 and bal[4]['voxels'] == 0
  f = s['tumour_fraction_brain']
  assert (f['min'], f['min_case'], f['max'], f['max_case']) == (0.0, 'b', 6 / 16, 'a')
  assert f['mean'] == pytest.approx((6 / 16 + 0) / 2)
  assert f['pooled'] == pytest.approx(6 / 24)
  assert s['tumour_fraction_all']['max'] == 6 / 32
  assert s['without_tumour'] == ['b']
  text = ins.format_report(rows, s)
  assert 'no tumour' in text and 'no label' in text and 'UNREADABLE' in text


def test_format_table_aligns_columns():
  text = ins.format_table(['name', 'n'], [['a', 1], ['long name', 12345]],
                          right=[False, True])
  lines = text.splitlines()
  assert lines[1] == '---------  -----'
  assert lines[2] == 'a              1'
  assert lines[3] == 'long name  12345'


# ----------------------------------------------------------- label guard


def test_exact_copy_is_flagged():
  image, _ = _brain_phantom()
  # An integer image whose values are all valid BraTS labels.
  image[..., 2] = np.where(image[..., 2] > 0,
                           np.array([1, 2, 4])[image[..., 2].astype(int) % 3], 0)
  assert checks.label_copies_channel(image, image[..., 2].astype(np.uint8)) == (2, 1.0)


@pytest.mark.parametrize('scale, shift, noise', [(250.0, 0.0, 0.0),
                                                 (-3.5, 1000.0, 0.0),
                                                 (250.0, 30.0, 10.0)])
def test_scaled_copy_is_flagged(scale, shift, noise):
  """The channel is a * label + b (+ a little noise): |r| >= 0.98."""
  image, label = _brain_phantom()
  rng = np.random.default_rng(1)
  brain = image[..., 0] > 0
  image[..., 3] = np.where(brain, scale * label + shift +
                           rng.normal(0, noise, label.shape) if noise else
                           scale * label + shift, 0)
  found = checks.label_copies_channel(image, label)
  assert found is not None and found[0] == 3
  r = abs(np.corrcoef(image[..., 3][brain], label[brain])[0, 1])
  assert r >= 0.98 and found[1] == pytest.approx(r, abs=1e-9)


def test_binarised_copies_are_flagged():
  image, _ = _brain_phantom()
  # label = flair != 0: the channel's own mask, Dice 1.
  found = checks.label_copies_channel(image, (image[..., 0] != 0).astype(np.uint8))
  assert found == (0, 1.0)
  # label = t1 > 0 where resampling left small negative values around the
  # brain: the mask channel > 0 matches, channel != 0 would not.
  rim = (image[..., 1] == 0) & (np.roll(image[..., 1], 1, axis=0) > 0)
  image[..., 1][rim] = -2
  label = (image[..., 1] > 0).astype(np.uint8)
  assert checks.dice(label > 0, image[..., 1] != 0) < checks.COPY_DICE
  assert checks.copy_scores(image, label)[1].mask_dice == 1.0
  assert checks.label_copies_channel(image, label)[1] == 1.0
  # The brain mask (any channel != 0) where no channel's mask is the whole
  # brain: t1ce has an extra plane at y = 0, t2 one at y = 17.
  image[:, 0, :, 2] = 7
  image[:, 17, :, 3] = 7
  brain = np.any(image != 0, axis=-1)
  own = [checks.dice(brain, image[..., c] != 0) for c in range(4)]
  assert max(own) < checks.COPY_DICE
  found = checks.label_copies_channel(image, brain.astype(np.uint8))
  assert found is not None and found[1] == 1.0
  scores = checks.copy_scores(image, brain.astype(np.uint8))
  assert scores[found[0]].mask == checks.BRAIN_MASK


def test_real_tumours_are_not_flagged_in_the_phantom():
  image, label = _brain_phantom()
  assert checks.label_copies_channel(image, label) is None
  assert checks.label_copies_channel(image, np.zeros_like(label)) is None


def _tumour_crop(volume, margin=8):
  """The volume cut to the tumour's bounding box plus `margin` voxels."""
  hits = np.argwhere(volume.label > 0)
  lo = np.maximum(hits.min(0) - margin, 0)
  hi = hits.max(0) + margin + 1
  box = tuple(slice(a, b) for a, b in zip(lo, hi))
  return volume.image[box], volume.label[box]


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize('root, mods', [('tcga_4mod', MODS),
                                        ('brats18_wt', ('flair', 't1'))])
def test_real_labels_are_not_flagged(root, mods):
  for case in sources.discover_cases(str(DATA / root)):
    volume = sources.load_case(case, mods)
    image, label = _tumour_crop(volume)
    assert np.count_nonzero(label) == np.count_nonzero(volume.label)
    assert checks.label_copies_channel(image, label) is None, case.case_id
    for s in checks.copy_scores(image, label):
      assert s.correlation < 0.9 and s.mask_dice < 0.9, (case.case_id, s)


# --------------------------------------------------- training refuses it


def _write(path, data, affine=None):
  nib.save(nib.Nifti1Image(np.asarray(data),
                           np.eye(4) if affine is None else affine), str(path))


def _brats_folder(root, n=3, affine=None, copy=None):
  """BraTS 2019 case folders C0..C{n-1}; C1's label made by `copy` if given."""
  for i in range(n):
    case = f'C{i}'
    folder = root / case
    folder.mkdir(parents=True)
    image, label = _brain_phantom(seed=i)
    if i == 2:
      label[:] = 0                                  # a case without tumour
    for c, m in enumerate(MODS):
      _write(folder / f'{case}_{m}.nii.gz', image[..., c].astype(np.int16), affine)
    _write(folder / f'{case}_seg.nii.gz', label, affine)
    if copy and i == 1:
      copy(folder, image, affine)
  return root


def _copy_flair_file(folder, image, affine):
  """The label file is the flair file, whose int16 values are 0/1/2/4."""
  flair = np.where(image[..., 0] > 0,
                   np.array([1, 2, 4])[image[..., 0].astype(int) % 3], 0)
  _write(folder / 'C1_flair.nii.gz', flair.astype(np.int16), affine)
  shutil.copy(folder / 'C1_flair.nii.gz', folder / 'C1_seg.nii.gz')


def _binarised_flair(folder, image, affine):
  _write(folder / 'C1_seg.nii.gz', (image[..., 0] > 0).astype(np.uint8), affine)


def _copy_real_flair_file(folder, image, affine):
  del image, affine
  shutil.copy(folder / 'C1_flair.nii.gz', folder / 'C1_seg.nii.gz')


@pytest.mark.parametrize('copy, says', [
    (_copy_flair_file, "channel 'flair' (correlation 1.000)"),
    (_binarised_flair, "channel 'flair' (foreground Dice 1.000"),
    # A copy of a real-valued image already fails the label-value check.
    (_copy_real_flair_file, 'outside the convention')])
def test_prepare_split_refuses_a_label_copied_from_flair(tmp_path, copy, says):
  root = _brats_folder(tmp_path / 'd', copy=copy)
  cases = sources.discover_cases(str(root))
  with pytest.raises(InputError) as info:
    pipeline.prepare_split(cases, modalities=MODS, image_size=16,
                           label_mode='binary', background_ratio=0.25,
                           min_brain_fraction=0.05, seed=0)
  msg = str(info.value)
  assert info.value.where.endswith('C1_seg.nii.gz') and says in msg, msg
  if copy is not _copy_real_flair_file:
    assert 'the label of case C1' in msg and 'copy of the image' in msg


def test_training_preparation_writes_nothing(tmp_path):
  from jaxseg import config_base
  config = config_base.load_config_file(str(REPO / 'configs' / 'brats19_resunet.py'))
  config.data.root = str(_brats_folder(tmp_path / 'd', copy=_binarised_flair))
  config.data.split = (0.34, 0.33, 0.33)
  config.data.image_size = 16
  with pytest.raises(InputError, match='C1'):
    dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)
  assert not (tmp_path / 'run').exists()


# ------------------------------------------------------------- montage


@pytest.mark.slow
def test_montage_legend_names_the_drawn_labels(tmp_path, monkeypatch):
  from jaxseg import plots  # pylint: disable=g-import-not-at-top
  image, label = _brain_phantom()
  z = int(np.argmax((label > 0).sum(axis=(0, 1))))
  drawn = set(np.unique(label[..., z])) - {0}
  assert drawn == {1, 2, 4}
  figures = []
  monkeypatch.setattr(plots.plt, 'close', figures.append)
  ins.write_montage([_volume(image, label)], str(tmp_path / 'm.png'))
  ins.write_montage([_volume(image, (label > 0).astype(np.uint8))],
                    str(tmp_path / 'b.png'), binary=True)
  ins.write_montage([_volume(image, np.zeros_like(label))],
                    str(tmp_path / 'n.png'))
  texts = [[t.get_text() for l in f.legends for t in l.get_texts()]
           for f in figures]
  assert texts == [['NCR (1)', 'ED (2)', 'ET (4)'], ['tumour (1)'], []]
  assert (tmp_path / 'm.png').read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------- tinted COCO images


def _coco_folder(root, images):
  """`root` with {file name: uint8 (64, 64, 3)} PNGs and their COCO json."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root.mkdir(parents=True)
  entries = []
  for k, (name, rgb) in enumerate(images.items()):
    Image.fromarray(rgb).save(root / name)
    entries.append(dict(id=k, file_name=name, height=64, width=64))
  (root / '_annotations.coco.json').write_text(json.dumps(dict(
      categories=[dict(id=1, name='tumor')], images=entries,
      annotations=[dict(id=0, image_id=0, category_id=1,
                        bbox=[20, 20, 8, 8])])))


def test_tinted_coco_images_are_counted_not_refused(tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  from jaxseg import config_base  # pylint: disable=g-import-not-at-top
  yy, xx = np.mgrid[:64, :64]
  disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 24 ** 2         # 44 % of the pixels
  grey = np.where(disc, 100 + 3 * (xx % 30), 0).astype(np.float64)
  # Blue-tinted grey: channels 0.25 g apart, more than 16 levels in the disc.
  tinted = np.round(grey[..., None] * [0.8, 0.85, 1.054]).astype(np.uint8)
  colour = np.stack([grey, 4.0 * yy, 4.0 * xx], -1).astype(np.uint8)
  images = {'a.png': np.repeat(grey[..., None], 3, -1).astype(np.uint8),
            'b.png': tinted, 'c.png': tinted[::-1].copy()}
  root = tmp_path / 'set'
  _coco_folder(root, images)
  config = config_base.load_config_file(
      str(REPO / 'configs' / 'coco_cnn_simple.py'))
  config.data.root = str(root)
  out, err = io.StringIO(), io.StringIO()
  report = ins.inspect_dataset(config, str(tmp_path / 'report'), num_cases=0,
                               stream=out, err=err)
  warnings = [l for l in err.getvalue().splitlines() if 'warning' in l]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith(
      'jaxseg: warning: 2 of 3 images are grey with a colour tint')
  assert str(root / 'b.png') in warnings[0]
  assert report['tinted_images'] == [str(root / 'b.png'), str(root / 'c.png')]
  assert report['summary']['unreadable'] == []
  saved = json.loads((tmp_path / 'report' / 'inspect.json').read_text())
  assert saved['tinted_images'] == report['tinted_images']
  # A real colour image is still a case that cannot be read.
  shutil.rmtree(root)
  _coco_folder(root, dict(images, **{'d.png': colour}))
  err = io.StringIO()
  with pytest.raises(InputError, match='1 of 4 cases could not be read.*'
                     'd.png: is a colour image'):
    ins.inspect_dataset(config, str(tmp_path / 'report'), num_cases=0,
                        stream=io.StringIO(), err=err)
  counts = [l for l in err.getvalue().splitlines() if 'colour tint' in l]
  assert len(counts) == 1 and '2 of 4 images' in counts[0]


# --------------------------------------------------------- command line


def _cli(*args, env=None):
  cmd = [sys.executable, '-m', 'jaxseg.inspect',
         '--config=configs/brats19_resunet.py', *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        timeout=240, env=env)


@pytest.mark.slow
def test_command_line_end_to_end(tmp_path):
  affine = np.diag([1.5, 1.5, 3.0, 1.0])
  root = _brats_folder(tmp_path / 'd', affine=affine, copy=_binarised_flair)
  out = tmp_path / 'report'
  run = _cli(f'--config.data.root={root}', f'--output={out}', '--cases=2')
  assert run.returncode == 0, run.stderr
  assert 'inspected case 3/3 C2' in run.stderr and 's/case' in run.stderr
  warnings = [l for l in run.stderr.splitlines() if 'jaxseg: warning:' in l]
  assert len(warnings) == 1 and 'C1_seg.nii.gz' in warnings[0]
  case_table = run.stdout.split('\n\n')[0]
  table = {l.split()[0]: l for l in case_table.splitlines() if l.startswith('C')}
  assert "LABEL COPIES 'flair'" in table['C1'] and 'no tumour' in table['C2']

  report = json.loads((out / 'inspect.json').read_text())
  assert [r['case'] for r in report['cases']] == ['C0', 'C1', 'C2']
  for row in report['cases']:
    folder = root / row['case']
    image = np.stack([np.asanyarray(nib.load(folder / f"{row['case']}_{m}.nii.gz")
                                    .dataobj) for m in MODS], -1)
    label = np.asanyarray(nib.load(folder / f"{row['case']}_seg.nii.gz").dataobj)
    brain = np.any(image != 0, -1)
    assert row['shape'] == list(label.shape)
    assert row['spacing'] == [1.5, 1.5, 3.0]
    values, counts = np.unique(label, return_counts=True)
    hist = {str(v): 0 for v in (0, 1, 2, 4)}
    hist.update({str(int(v)): int(n) for v, n in zip(values, counts)})
    assert row['label_histogram'] == hist
    assert row['tumour_voxels'] == np.count_nonzero(label)
    assert row['tumour_fraction_brain'] == np.count_nonzero(label) / brain.sum()
    assert row['tumour_fraction_all'] == np.count_nonzero(label) / label.size
    for c, m in enumerate(MODS):
      channel = image[..., c].astype(np.float64)
      expected = dict(min=channel.min(), max=channel.max())
      expected['p1'], expected['p99'] = np.percentile(channel[brain], (1, 99))
      assert row['channels'][m] == pytest.approx(expected, rel=1e-6)
  summary = report['summary']
  assert summary['label_copies'] == ['C1'] and summary['without_tumour'] == ['C2']
  assert report['cases'][1]['label_copy']['channel'] == 'flair'

  png = out / 'montage.png'
  assert png.read_bytes()[:8] == PNG_SIGNATURE
  import matplotlib.image                       # pylint: disable=g-import-not-at-top
  pixels = matplotlib.image.imread(str(png))
  assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
  assert not list(out.glob('*.tmp*'))


@pytest.mark.slow
def test_command_line_synthetic_set(tmp_path):
  """No data.root: the embedded synthetic set, generated into the cache."""
  env = dict(os.environ, JAXSEG_CACHE=str(tmp_path / 'cache'))
  run = _cli('--config.data.synthetic.num_cases=2',
             '--config.data.synthetic.shape=(32,32,32)',
             f'--output={tmp_path / "out"}', '--cases=1', env=env)
  assert run.returncode == 0, run.stderr
  report = json.loads((tmp_path / 'out' / 'inspect.json').read_text())
  assert [r['case'] for r in report['cases']] == ['SYN_000', 'SYN_001']
  assert report['summary']['label_copies'] == []


@pytest.mark.slow
@pytest.mark.parametrize('arg, names', [
    ('--config.data.root={tmp}/nowhere', ['nowhere', 'does not exist']),
    ('--config.data.rooot=x', ['--config.data.rooot', 'unknown config key']),
    ('--config=configs/no_such_config.py', ['no_such_config.py'])])
def test_command_line_errors(tmp_path, arg, names):
  run = _cli(arg.format(tmp=tmp_path), f'--output={tmp_path / "out"}')
  assert run.returncode == 2
  errors = [l for l in run.stderr.splitlines() if l.strip()]
  assert len(errors) == 1 and errors[0].startswith('jaxseg: error:'), run.stderr
  assert all(n in errors[0] for n in names), errors[0]
  assert not (tmp_path / 'out').exists()
