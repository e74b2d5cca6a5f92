"""PNG figures: training curves, score boxes, confusion matrix, overlays."""

import json
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.patches  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from jaxseg import labels  # pylint: disable=g-import-not-at-top


def epoch_records(metrics_path: str) -> list[dict]:
  """The per-epoch records of a metrics.jsonl (those with an 'epoch' key), last wins."""
  by_epoch = {}
  with open(metrics_path) as f:
    for line in f:
      record = json.loads(line)
      if 'epoch' in record:
        by_epoch[int(record['epoch'])] = record
  return [by_epoch[e] for e in sorted(by_epoch)]


def curves_figure(records: list[dict], best_epoch: int | None = None):
  """The figure of `plot_curves`: loss, Dice and learning rate over epochs.

  Epoch ticks are whole numbers; the best epoch (the checkpoint that is
  tested) is a dotted line named in each legend.
  """
  epochs = [r['epoch'] for r in records]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, key in zip(axes[:2], ('loss', 'dice')):
    for split, style in (('train', '-'), ('val', '--')):
      values = [r.get(f'{split}/{key}') for r in records]
      ax.plot(epochs, values, style, marker='.', label=split)
    ax.set_title(key)
  axes[2].semilogy(epochs, [r['learning_rate'] for r in records], marker='.',
                   label='learning rate')
  axes[2].set_title('learning rate')
  for ax in axes:
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if best_epoch:
      ax.axvline(best_epoch, color='grey', lw=0.8, ls=':',
                 label=f'best epoch ({best_epoch})')
    ax.legend()
  fig.tight_layout()
  return fig


def plot_curves(metrics_path: str, out_path: str, best_epoch: int | None = None) -> None:
  """Loss, Dice (train and validation) and learning rate per epoch, as one PNG."""
  records = epoch_records(metrics_path)
  if not records:
    return
  fig = curves_figure(records, best_epoch)
  tmp = out_path + '.tmp.png'
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, out_path)


# ------------------------------------------------------- evaluation figures

FIGURE_DPI = 100
# Seed 003's per-volume Dice figure: median green, mean red.
MEDIAN_COLOR = 'green'
MEAN_COLOR = 'red'


def _save(fig, out_path: str, dpi: int = FIGURE_DPI) -> None:
  """Writes `fig` as a PNG atomically (no half-written file) and closes it."""
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  tmp = out_path + '.tmp.png'
  fig.savefig(tmp, dpi=dpi)
  plt.close(fig)
  os.replace(tmp, out_path)


def box_figsize(num_regions: int) -> tuple[float, float]:
  """Inches of the box plot: 2 + 2 per region wide, 5 high."""
  return (2.0 + 2.0 * num_regions, 5.0)


def score_regions(rows: list[dict], score: str = 'dice') -> list[str]:
  """The region names of the `{score}_{region}` columns of per-case rows."""
  prefix = f'{score}_'
  return [k[len(prefix):] for k in rows[0] if k.startswith(prefix)]


def plot_score_box(rows: list[dict], out_path: str, score: str = 'dice',
                   regions=None) -> dict[str, dict[str, float]]:
  """Box plot of a per-case score per region, mean and median marked.

  One box per region over the cases (whiskers at 1.5 IQR, every case drawn
  as a dot), the median as a solid green line and the mean as a dashed red
  line, as in seed 003's per-volume Dice figure.

  Args:
    rows: per-case dicts with `{score}_{region}` entries (the eval CSV rows).
    out_path: the PNG to write (box_figsize(len(regions)) at FIGURE_DPI).
    score: the column prefix, e.g. 'dice'.
    regions: region names; None: every `{score}_*` column, in row order.

  Returns:
    {region: {'median', 'mean'}} as matplotlib computed and drew them.
  """
  if not rows:
    raise ValueError('no cases to plot')
  regions = list(regions or score_regions(rows, score))
  if not regions:
    raise ValueError(f'no {score}_<region> columns to plot')
  data = [[float(r[f'{score}_{name}']) for r in rows] for name in regions]
  fig, ax = plt.subplots(figsize=box_figsize(len(regions)))
  drawn = ax.boxplot(
      data, showmeans=True, meanline=True, widths=0.5,
      medianprops=dict(color=MEDIAN_COLOR, lw=2),
      meanprops=dict(color=MEAN_COLOR, ls='--', lw=2))
  for i, values in enumerate(data, start=1):
    ax.plot([i] * len(values), values, 'o', color='black', alpha=0.5, ms=4)
  marks = {}
  for i, name in enumerate(regions):
    median = float(drawn['medians'][i].get_ydata()[0])
    mean = float(drawn['means'][i].get_ydata()[0])
    marks[name] = dict(median=median, mean=mean)
    ax.annotate(f'median {median:.3f}\nmean {mean:.3f}', (i + 1.28, median),
                fontsize=8, va='center')
  ax.set_xticks(range(1, len(regions) + 1), regions)
  ax.set_xlim(0.5, len(regions) + 0.9)
  ax.set_ylabel(score)
  if score in ('dice', 'iou', 'nsd'):
    ax.set_ylim(-0.02, 1.02)
  ax.set_title(f'per-case {score} ({len(rows)} cases)')
  ax.legend(handles=[drawn['medians'][0], drawn['means'][0]],
            labels=['median', 'mean'], loc='lower left', fontsize=8)
  fig.tight_layout()
  _save(fig, out_path)
  return marks


def confusion_figsize(num_classes: int) -> tuple[float, float]:
  """Inches of the confusion-matrix figure: 3 + K wide, 2 + K high."""
  return (3.0 + num_classes, 2.0 + num_classes)


def row_normalize(counts) -> np.ndarray:
  """Each row divided by its sum (float64); an all-zero row stays 0."""
  counts = np.asarray(counts, np.float64)
  totals = counts.sum(axis=1, keepdims=True)
  return np.divide(counts, totals, out=np.zeros_like(counts),
                   where=totals > 0)


def plot_confusion(counts, names, out_path: str, title: str = '') -> np.ndarray:
  """Confusion matrix PNG: colour = row-normalised, text = fraction and count.

  Args:
    counts: (K, K) voxel counts, rows true class, columns predicted class
      (`metrics.confusion_matrix`).
    names: K class names for the ticks.
    out_path: the PNG to write (confusion_figsize(K) at FIGURE_DPI).
    title: figure title.

  Returns:
    The (K, K) row-normalised matrix that was drawn.
  """
  counts = np.asarray(counts)
  k = len(names)
  if counts.shape != (k, k):
    raise ValueError(f'counts {counts.shape} do not match {k} class names')
  fractions = row_normalize(counts)
  fig, ax = plt.subplots(figsize=confusion_figsize(k))
  image = ax.imshow(fractions, cmap='Blues', vmin=0.0, vmax=1.0)
  for i in range(k):
    for j in range(k):
      ax.text(j, i, f'{fractions[i, j]:.3f}\n{int(counts[i, j]):,}',
              ha='center', va='center', fontsize=8,
              color='white' if fractions[i, j] > 0.5 else 'black')
  ax.set_xticks(range(k), names)
  ax.set_yticks(range(k), names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title or 'voxels, row-normalised', fontsize=10)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  _save(fig, out_path)
  return fractions


# ------------------------------------------------------------ case overlays

# Label colours (RGB) of the overlays: BraTS necrosis red, oedema green,
# enhancing tumour yellow (4 in BraTS 2018-21, 3 in 2023+); masks are 1.
LABEL_COLORS = {1: (1.0, 0.15, 0.15), 2: (0.2, 0.85, 0.2), 3: (1.0, 0.9, 0.1),
                4: (1.0, 0.9, 0.1)}
OVERLAY_ALPHA = 0.45
# Height kept free under the panels for the legend.
LEGEND_INCHES = 0.3


def largest_tumour_slice(*label_maps, brain=None) -> int:
  """The axial index z of (H, W, D) maps with the most tumour voxels.

  The first map with any tumour decides; with none, the slice with the most
  `brain` (or the middle slice).
  """
  for label in label_maps:
    if label is not None and np.any(label):
      return int(np.argmax((np.asarray(label) > 0).sum(axis=(0, 1))))
  if brain is not None and np.any(brain):
    return int(np.argmax(brain.sum(axis=(0, 1))))
  shape = next(l.shape for l in label_maps if l is not None)
  return shape[2] // 2


def label_rgba(label: np.ndarray) -> np.ndarray:
  """(H, W) label values -> (H, W, 4) colours, transparent where 0."""
  rgba = np.zeros(label.shape + (4,), np.float32)
  for value, color in LABEL_COLORS.items():
    where = label == value
    rgba[where, :3] = color
    rgba[where, 3] = OVERLAY_ALPHA
  return rgba


# Uncertainty below this fraction of the slice's maximum is left transparent.
UNCERTAINTY_FLOOR = 0.05


def uncertainty_rgba(uncertainty: np.ndarray, brain: np.ndarray,
                     vmax: float) -> np.ndarray:
  """(H, W) uncertainty -> (H, W, 4) 'Greens' colours over the anatomy.

  Transparent outside the brain (any input != 0) and where the uncertainty
  is below `UNCERTAINTY_FLOOR` of `vmax`, so the image shows through;
  opacity grows with the uncertainty.
  """
  level = np.clip(np.asarray(uncertainty, np.float32) / max(vmax, 1e-12), 0, 1)
  rgba = plt.get_cmap('Greens')(level).astype(np.float32)
  rgba[..., 3] = np.where(brain & (level >= UNCERTAINTY_FLOOR),
                          0.25 + 0.6 * level, 0.0)
  return rgba


def legend_entries(*label_maps, names=None) -> list[tuple[str, tuple]]:
  """('NAME (value)', RGB colour) of each coloured label value in the maps.

  Args:
    *label_maps: label maps of any shape (None: skipped), as drawn.
    names: {value: name} (`LabelScheme.class_names`); None: the BraTS
      names (`labels.class_names()`).

  Only values present in a map are listed, ascending.
  """
  names = labels.class_names() if names is None else names
  present = set()
  for label in label_maps:
    if label is not None:
      present.update(int(v) for v in np.unique(label))
  return [(f"{names.get(v, 'label')} ({v})", LABEL_COLORS[v])
          for v in sorted(present & set(LABEL_COLORS))]


def add_label_legend(fig, entries) -> None:
  """Lays `fig` out with a legend of `legend_entries` under its panels."""
  if not entries:
    fig.tight_layout()
    return
  handles = [matplotlib.patches.Patch(color=color, label=text)
             for text, color in entries]
  fig.legend(handles=handles, loc='lower center', ncol=len(handles),
             fontsize=8, frameon=False)
  fig.tight_layout(rect=(0, LEGEND_INCHES / fig.get_figheight(), 1, 1))


def _show(ax, image, overlay=None, title=''):
  ax.imshow(np.rot90(image), cmap='gray')
  if overlay is not None:
    ax.imshow(np.rot90(label_rgba(overlay)))
  ax.set_title(title, fontsize=9)
  ax.axis('off')


def case_figure(image: np.ndarray, label, pred: np.ndarray, uncertainty=None,
                title: str = '', z: int | None = None, names=None):
  """The figure of `plot_case` and the slice drawn: (figure, z)."""
  if z is None:
    z = largest_tumour_slice(label, pred, brain=image != 0)
  panels = [('input', None)]
  if label is not None:
    panels.append(('label', label[..., z]))
  panels.append(('prediction', pred[..., z]))
  n = len(panels) + (uncertainty is not None)
  fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6))
  for ax, (name, overlay) in zip(axes, panels):
    _show(ax, image[..., z], overlay, name)
  if uncertainty is not None:
    ax = axes[-1]
    # Seed 002's figure 3: the greener, the more uncertain; drawn over the
    # slice, inside the brain only.
    values = uncertainty[..., z]
    vmax = float(values.max()) or 1.0
    ax.imshow(np.rot90(image[..., z]), cmap='gray')
    ax.imshow(np.rot90(uncertainty_rgba(values, image[..., z] != 0, vmax)))
    mappable = plt.cm.ScalarMappable(cmap='Greens',
                                     norm=plt.Normalize(0.0, vmax))
    ax.set_title('uncertainty (entropy, nats)', fontsize=9)
    ax.axis('off')
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
  fig.suptitle(f'{title}  axial slice {z}', fontsize=10)
  add_label_legend(fig, legend_entries(*(o for _, o in panels), names=names))
  return fig, z


def plot_case(image: np.ndarray, label, pred: np.ndarray, out_path: str,
              uncertainty=None, title: str = '', z: int | None = None,
              names=None) -> int:
  """One case's axial slice: input, input + label, input + prediction, uncertainty.

  Args:
    image: (H, W, D) one input channel.
    label: (H, W, D) label map or None (the panel is left out).
    pred: (H, W, D) predicted label map, same convention as `label`.
    out_path: the PNG to write.
    uncertainty: optional (H, W, D) map (e.g. predictive entropy), drawn with
      a colour bar.
    z: the slice; None: the one of largest tumour extent in the label (else
      the prediction).
    names: {label value: name} of the legend under the panels, which lists
      the values drawn on this slice (`legend_entries`); None: BraTS names.

  Returns:
    The slice index drawn.
  """
  fig, z = case_figure(image, label, pred, uncertainty, title, z, names)
  _save(fig, out_path)
  return z
