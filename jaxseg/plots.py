"""PNG figures of a run: training curves from `metrics.jsonl`."""

import json
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def epoch_records(metrics_path: str) -> list[dict]:
  """The per-epoch records of a metrics.jsonl (those with an 'epoch' key), last wins."""
  by_epoch = {}
  with open(metrics_path) as f:
    for line in f:
      record = json.loads(line)
      if 'epoch' in record:
        by_epoch[int(record['epoch'])] = record
  return [by_epoch[e] for e in sorted(by_epoch)]


def plot_curves(metrics_path: str, out_path: str, best_epoch: int | None = None) -> None:
  """Loss, Dice (train and validation) and learning rate per epoch, as one PNG."""
  records = epoch_records(metrics_path)
  if not records:
    return
  epochs = [r['epoch'] for r in records]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, key in zip(axes[:2], ('loss', 'dice')):
    for split, style in (('train', '-'), ('val', '--')):
      values = [r.get(f'{split}/{key}') for r in records]
      ax.plot(epochs, values, style, marker='.', label=split)
    ax.set_title(key)
    ax.set_xlabel('epoch')
    ax.legend()
    if best_epoch:
      ax.axvline(best_epoch, color='grey', lw=0.8, ls=':')
  axes[2].semilogy(epochs, [r['learning_rate'] for r in records], marker='.')
  axes[2].set_title('learning rate')
  axes[2].set_xlabel('epoch')
  fig.tight_layout()
  tmp = out_path + '.tmp.png'
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, out_path)
