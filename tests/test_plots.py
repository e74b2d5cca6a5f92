"""The PNG figures: training curves and the per-case uncertainty overlay.

References: the figures' own axes and artists (matplotlib), hand-made maps.
"""

import numpy as np

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
