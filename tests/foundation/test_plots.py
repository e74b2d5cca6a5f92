"""The PNG figures: curves, case overlays and their legend, uncertainty.

References: the figures' own axes and artists (matplotlib), hand-made maps.
"""

import numpy as np
import pytest

from jaxseg import labels
from jaxseg import plots

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _records(n=7):
  return [{'epoch': e, 'train/loss': 1.0 / e, 'val/loss': 1.2 / e,
           'train/dice': 1 - 1.0 / e, 'val/dice': 1 - 1.3 / e,
           'learning_rate': 0.01 * 0.5 ** (e // 3)} for e in range(1, n + 1)]


def test_curves_have_whole_epoch_ticks_and_a_named_best_epoch():
  fig = plots.curves_figure(_records(7), best_epoch=5)
  fig.canvas.draw()
  for ax in fig.axes:
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    labels = ax.get_legend_handles_labels()[1]
    assert 'best epoch (5)' in labels
    best = [l for l in ax.get_lines() if l.get_label() == 'best epoch (5)']
    assert list(best[0].get_xdata()) == [5, 5]


def test_curves_png_is_written(tmp_path):
  import json
  path = tmp_path / 'metrics.jsonl'
  path.write_text('\n'.join(json.dumps(r) for r in _records(3)))
  plots.plot_curves(str(path), str(tmp_path / 'curves.png'), best_epoch=2)
  assert (tmp_path / 'curves.png').read_bytes()[:8] == PNG_SIGNATURE


def test_uncertainty_is_drawn_over_the_brain_only():
  brain = np.zeros((6, 6), bool)
  brain[1:5, 1:5] = True
  unc = np.full((6, 6), 0.5, np.float32)   # also outside: the crop box
  unc[2, 2] = 0.01                         # below the floor: transparent
  unc[3, 3] = 1.0
  rgba = plots.uncertainty_rgba(unc, brain, vmax=1.0)
  assert rgba.shape == (6, 6, 4)
  assert (rgba[~brain, 3] == 0).all()
  assert rgba[2, 2, 3] == 0
  assert rgba[3, 3, 3] > rgba[1, 1, 3] > 0      # more uncertain, more opaque


def test_case_png_with_uncertainty(tmp_path):
  rng = np.random.default_rng(0)
  image = np.zeros((20, 20, 5), np.float32)
  image[3:17, 3:17] = rng.uniform(1, 2, (14, 14, 5))
  label = np.zeros((20, 20, 5), np.uint8)
  label[8:12, 8:12, 2] = 1
  unc = np.where(image > 0, 0.3, 0.2).astype(np.float32)
  z = plots.plot_case(image, label, label, str(tmp_path / 'c.png'),
                      uncertainty=unc, title='c')
  assert z == 2
  assert (tmp_path / 'c.png').read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------ overlay legends


def _legend(fig):
  """[(text, RGB)] of the figure's legend (matplotlib's own artists)."""
  (legend,) = fig.legends
  return [(t.get_text(), tuple(np.round(h.get_facecolor()[:3], 4)))
          for t, h in zip(legend.get_texts(), legend.legend_handles)]


def _overlay_colour(ax, label_slice, value):
  """The RGB that the axes' overlay image shows at a voxel of `value`."""
  overlay = ax.get_images()[1].get_array()          # (W, H, 4), rot90
  i, j = np.argwhere(np.rot90(label_slice) == value)[0]
  return tuple(np.round(np.asarray(overlay[i, j, :3], np.float64), 4))


def _hand_case():
  """Slice 2 (most tumour): label NCR 16 + ED 9 voxels, prediction ET 4;
  ET in the label on slice 3 and a 3 in the prediction on slice 4 are not
  drawn."""
  image = np.ones((20, 20, 5), np.float32)
  label = np.zeros((20, 20, 5), np.uint8)
  label[2:6, 2:6, 2] = 1
  label[10:13, 10:13, 2] = 2
  label[4:6, 4:6, 3] = 4
  pred = np.zeros_like(label)
  pred[14:16, 14:16, 2] = 4
  pred[3:5, 3:5, 4] = 3
  return image, label, pred


def test_legend_entries_hand_worked():
  _, label, pred = _hand_case()
  red, green, yellow = (plots.LABEL_COLORS[v] for v in (1, 2, 4))
  assert plots.legend_entries(label[..., 2], pred[..., 2]) == [
      ('NCR (1)', red), ('ED (2)', green), ('ET (4)', yellow)]
  assert plots.legend_entries(None, pred[..., 4]) == [('ET (3)', yellow)]
  assert plots.legend_entries(label[..., 2] > 0, names=labels.BINARY.class_names
                              ) == [('tumour (1)', red)]
  # No colour for 7: not drawn, not listed; no tumour: no entries.
  assert plots.legend_entries(np.array([0, 7])) == []


def test_case_legend_names_the_colours_drawn(tmp_path):
  image, label, pred = _hand_case()
  fig, z = plots.case_figure(image, label, pred,
                             names=labels.class_names())
  assert z == 2
  entries = _legend(fig)
  assert [t for t, _ in entries] == ['NCR (1)', 'ED (2)', 'ET (4)']
  label_ax, pred_ax = fig.axes[1], fig.axes[2]
  assert [a.get_title() for a in (label_ax, pred_ax)] == ['label', 'prediction']
  # Each swatch is the colour its value has in the overlay images.
  assert entries[0][1] == _overlay_colour(label_ax, label[..., 2], 1)
  assert entries[1][1] == _overlay_colour(label_ax, label[..., 2], 2)
  assert entries[2][1] == _overlay_colour(pred_ax, pred[..., 2], 4)
  plots.plt.close(fig)
  # A binary mask: one entry, 'tumour'.
  binary = (label > 0).astype(np.uint8)
  fig, _ = plots.case_figure(image, binary, binary,
                             names=labels.BINARY.class_names)
  assert [t for t, _ in _legend(fig)] == ['tumour (1)']
  plots.plt.close(fig)
  # Nothing drawn: no legend.
  fig, _ = plots.case_figure(image, None, np.zeros_like(label))
  assert fig.legends == []
  plots.plt.close(fig)
  z = plots.plot_case(image, label, pred, str(tmp_path / 'c.png'))
  assert z == 2 and (tmp_path / 'c.png').read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize('label_mode, names', [
    ('binary', ['tumour (1)']), ('regions', ['NCR (1)', 'ED (2)', 'ET (4)'])])
def test_predict_case_png_names_the_label_mode(tmp_path, monkeypatch,
                                               label_mode, names):
  from jaxseg.inference import files  # pylint: disable=g-import-not-at-top
  from jaxseg.data import sources  # pylint: disable=g-import-not-at-top
  image, label, pred = _hand_case()
  if label_mode == 'binary':
    pred = (pred > 0).astype(np.uint8)
  volume = sources.Volume(image=image[..., None], label=label,
                          affine=np.eye(4), header=None, case_id='c',
                          modalities=('flair',))
  saved = []
  monkeypatch.setattr(plots, '_save', lambda fig, path: saved.append(fig))
  files.write_case_png(volume, pred, str(tmp_path / 'c.png'), label_mode)
  assert [t for t, _ in _legend(saved[0])] == names
  plots.plt.close(saved[0])
