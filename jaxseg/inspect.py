"""Dataset inspector: what is in a dataset, and whether its labels are labels.

    python -m jaxseg.inspect --config=configs/brats19_resunet.py \
        [--config.data.root=/data/brats] [--output=DIR] [--cases=4]

Reads every case of `config.data.root` (or the embedded synthetic set when
it is unset) with `config.data.modalities`, as training would, and prints
two aligned tables and a summary:

* per case: shape (H, W, D), voxel spacing in mm (the column norms of the
  affine), the label histogram (voxels per label value), the tumour fraction
  (label > 0 voxels over brain voxels, brain = any channel != 0, and over all
  voxels) and a note (no label, no tumour, a label copying a channel, an
  unreadable case);
* per case and channel: intensity min/max over the volume and the 1st/99th
  percentile inside the brain;
* the dataset: cases, shapes and spacings seen, label values, the class
  balance per label value, the tumour fraction (mean, min, max over cases)
  and the cases without tumour.

It writes `inspect.json` (every number) and `montage.png` (up to `--cases`
cases: cases whose label copies a channel first, then cases evenly spread
over the set; one row per case, one panel per channel on the axial slice of
largest tumour cross-section, the label as a coloured overlay) into
`--output`, by default `./inspect/<name of the data root>`. Progress (cases
done, s/case, time left) goes to stderr.

Unlike training, cases without a label file are inspected too. A case that
cannot be read is reported and the others are still inspected; the command
then ends with one `jaxseg: error:` line and exit status 2, as does a bad
config or a missing root. A label that copies an input channel (seed 000
lost its results to labels loaded as a copy of the image) is a warning here;
`checks.check_label_not_copy` makes it an error when training data is prepared.
Grey images with a colour tint (COCO exports) are read as grey; one warning
line gives their count, inspect.json their paths ('tinted_images').

The label-copy scores and their thresholds are `jaxseg.data.checks`'s
(`copy_scores`, `COPY_CORRELATION`, `COPY_DICE`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from jaxseg import cli
from jaxseg import config_base
from jaxseg import config_flags
from jaxseg import labels
from jaxseg import plots
from jaxseg.data import checks
from jaxseg.data import dataset
from jaxseg.data import sources
from jaxseg.data.formats import coco
from jaxseg.errors import InputError

PERCENTILES = (1.0, 99.0)


# ---------------------------------------------------------- case summary


def voxel_spacing(affine: np.ndarray) -> list[float]:
  """Voxel sizes (mm) along H, W, D: the norms of the affine's first 3 columns."""
  return [float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)]


def label_histogram(label: np.ndarray, values: Sequence[int] = ()
                    ) -> dict[int, int]:
  """Voxels per label value: every value present, and `values` (maybe 0)."""
  counts = np.bincount(np.asarray(label, np.int64).ravel())
  hist = {int(v): int(n) for v, n in enumerate(counts) if n}
  for v in values:
    hist.setdefault(int(v), 0)
  return dict(sorted(hist.items()))


def channel_stats(channel: np.ndarray, brain: np.ndarray) -> dict:
  """min/max over the volume; p1/p99 over `brain` voxels (None if no brain)."""
  inside = channel[brain]
  p = (np.percentile(inside, PERCENTILES) if inside.size
       else (None, None))
  return dict(min=float(channel.min()), max=float(channel.max()),
              p1=None if p[0] is None else float(p[0]),
              p99=None if p[1] is None else float(p[1]))


def case_summary(volume: sources.Volume,
                 label_values: Sequence[int] = ()) -> dict:
  """The numbers of one case.

  Args:
    volume: from `sources.load_case`: image (H, W, D, C), label (H, W, D).
    label_values: values listed in the histogram even when absent (the
      case's convention, e.g. (0, 1, 2, 4)).

  Returns:
    {'case', 'shape' [H, W, D], 'spacing' [mm x3], 'channels' {name: {min,
    max, p1, p99}}, 'voxels', 'brain_voxels', 'labelled', 'label_histogram'
    {value: voxels}, 'tumour_voxels', 'tumour_fraction_brain',
    'tumour_fraction_all', 'label_copy' (None or `copy_problem`)}; the label
    entries are None for a case without label. Brain = any channel != 0.
  """
  image = volume.image
  brain = np.any(image != 0, axis=-1)
  n_brain = int(np.count_nonzero(brain))
  row = dict(
      case=volume.case_id,
      shape=[int(s) for s in image.shape[:3]],
      spacing=voxel_spacing(volume.affine),
      channels={checks.channel_name(volume, c): channel_stats(image[..., c], brain)
                for c in range(image.shape[-1])},
      voxels=int(brain.size), brain_voxels=n_brain,
      labelled=volume.label is not None,
      label_histogram=None, tumour_voxels=None, tumour_fraction_brain=None,
      tumour_fraction_all=None, label_copy=None)
  if volume.label is not None:
    tumour = int(np.count_nonzero(volume.label))
    row.update(
        label_histogram=label_histogram(volume.label, label_values),
        tumour_voxels=tumour,
        tumour_fraction_brain=tumour / n_brain if n_brain else None,
        tumour_fraction_all=tumour / volume.label.size,
        label_copy=checks.copy_problem(volume))
  return row


# ------------------------------------------------------- dataset summary


def _dims(values: Sequence[float]) -> str:
  return 'x'.join(f'{v:.4g}' for v in values)


def _range(rows: list[dict], key: str) -> dict | None:
  """mean/min/max of rows[key] over the rows that have it, with the cases."""
  have = [r for r in rows if r.get(key) is not None]
  if not have:
    return None
  lo = min(have, key=lambda r: r[key])
  hi = max(have, key=lambda r: r[key])
  return dict(mean=float(np.mean([r[key] for r in have])),
              min=lo[key], min_case=lo['case'], max=hi[key],
              max_case=hi['case'])


def dataset_summary(rows: list[dict]) -> dict:
  """Aggregates `case_summary` rows (rows with an 'error' key are only counted).

  Returns:
    {'cases', 'labelled', 'unreadable' [ids], 'shapes' {'HxWxD': cases},
    'spacings' {'sxsysz': cases}, 'label_values', 'class_balance' {value:
    {voxels, fraction_all, fraction_tumour (None for 0), cases}},
    'tumour_fraction_brain' and 'tumour_fraction_all' ({mean, min, min_case,
    max, max_case, pooled} over labelled cases), 'without_tumour' [ids],
    'label_copies' [ids]}. Fractions are of the labelled cases' voxels;
    cases whose label copies a channel are left out of the label numbers.
  """
  read = [r for r in rows if 'error' not in r]
  labelled = [r for r in read if r['labelled']]
  copies = [r['case'] for r in labelled if r['label_copy']]
  # Labels that copy a channel would distort the balance: left out of it.
  labelled = [r for r in labelled if not r['label_copy']]
  shapes, spacings = {}, {}
  for r in read:
    key = _dims(r['shape'])
    shapes[key] = shapes.get(key, 0) + 1
    key = _dims(r['spacing'])
    spacings[key] = spacings.get(key, 0) + 1
  totals, present = {}, {}
  for r in labelled:
    for v, n in r['label_histogram'].items():
      totals[v] = totals.get(v, 0) + n
      present[v] = present.get(v, 0) + (n > 0)
  voxels = sum(r['voxels'] for r in labelled)
  tumour = sum(r['tumour_voxels'] for r in labelled)
  brain = sum(r['brain_voxels'] for r in labelled)
  balance = {v: dict(voxels=n, fraction_all=n / voxels if voxels else None,
                     fraction_tumour=(n / tumour if tumour else None) if v
                     else None,
                     cases=present[v])
             for v, n in sorted(totals.items())}
  fraction_brain = _range(labelled, 'tumour_fraction_brain')
  fraction_all = _range(labelled, 'tumour_fraction_all')
  if fraction_brain:
    fraction_brain['pooled'] = tumour / brain if brain else None
  if fraction_all:
    fraction_all['pooled'] = tumour / voxels
  return dict(
      cases=len(rows), labelled=len(labelled) + len(copies),
      unreadable=[r['case'] for r in rows if 'error' in r],
      shapes=shapes, spacings=spacings,
      label_values=[v for v, n in sorted(totals.items()) if n],
      class_balance=balance,
      tumour_fraction_brain=fraction_brain, tumour_fraction_all=fraction_all,
      without_tumour=[r['case'] for r in labelled if not r['tumour_voxels']],
      label_copies=copies)


# -------------------------------------------------------------- text out


def format_table(headers: Sequence[str], rows: Sequence[Sequence],
                 right: Sequence[bool] | None = None) -> str:
  """Columns aligned to their widest cell, a rule under the header.

  Args:
    headers: column titles.
    rows: cells (anything str() renders).
    right: per column, right-align (numbers); default: left.
  """
  cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  right = right or [False] * len(headers)

  def line(r):
    return '  '.join(c.rjust(w) if a else c.ljust(w)
                     for c, w, a in zip(r, widths, right)).rstrip()
  rule = '  '.join('-' * w for w in widths)
  return '\n'.join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _pct(x) -> str:
  return '-' if x is None else f'{100 * x:.2f}%'


def _num(x) -> str:
  return '-' if x is None else f'{x:.5g}'


def _note(row: dict) -> str:
  if 'error' in row:
    return f"UNREADABLE: {row['error']}"
  if not row['labelled']:
    return 'no label'
  if row['label_copy']:
    c = row['label_copy']
    measure = {'correlation': 'r', 'mask_dice': 'mask Dice'}[c['measure']]
    return f"LABEL COPIES '{c['channel']}' ({measure} {c['score']:.3f})"
  return 'no tumour' if not row['tumour_voxels'] else ''


def case_table(rows: list[dict]) -> str:
  """One line per case: shape, spacing, tumour fractions, histogram, note."""
  lines = []
  for r in rows:
    if 'error' in r:
      lines.append([r['case']] + ['-'] * 5 + [_note(r)])
      continue
    hist = ('-' if r['label_histogram'] is None else
            ' '.join(f'{v}:{n}' for v, n in r['label_histogram'].items()))
    lines.append([r['case'], _dims(r['shape']), _dims(r['spacing']),
                  _pct(r['tumour_fraction_brain']),
                  _pct(r['tumour_fraction_all']), hist, _note(r)])
  return format_table(
      ['case', 'shape', 'spacing mm', 'tumour/brain', 'tumour/all',
       'label voxels (value:count)', 'note'], lines,
      right=[False, False, False, True, True, False, False])


def intensity_table(rows: list[dict]) -> str:
  """One line per case and channel: min, max, p1 and p99 inside the brain."""
  lines = [[r['case'], name, _num(s['min']), _num(s['max']), _num(s['p1']),
            _num(s['p99'])]
           for r in rows if 'error' not in r
           for name, s in r['channels'].items()]
  return format_table(['case', 'channel', 'min', 'max', 'p1 brain',
                       'p99 brain'], lines,
                      right=[False, False, True, True, True, True])


def summary_text(summary: dict) -> str:
  """The dataset summary: counts, shapes, spacings, class balance, fractions."""
  def seen(d):
    return ', '.join(f'{k} ({n} case{"s" * (n != 1)})' for k, n in d.items())
  unreadable = len(summary['unreadable'])
  values = ', '.join(map(str, summary['label_values']))
  out = [f"cases: {summary['cases']} ({summary['labelled']} labelled"
         + (f', {unreadable} unreadable)' if unreadable else ')'),
         f"shapes: {seen(summary['shapes']) or '-'}",
         f"spacings (mm): {seen(summary['spacings']) or '-'}",
         f"label values: {values or '-'}"]
  if summary['class_balance']:
    left_out = (f", without the {len(summary['label_copies'])} copying a "
                'channel' if summary['label_copies'] else '')
    out += ['', f'class balance (labelled cases{left_out}):', format_table(
        ['label', 'voxels', 'of all', 'of tumour', 'cases with it'],
        [[v, b['voxels'], _pct(b['fraction_all']), _pct(b['fraction_tumour']),
          b['cases']] for v, b in summary['class_balance'].items()],
        right=[True] * 5), '']
  for key, what in (('tumour_fraction_brain', 'brain'),
                    ('tumour_fraction_all', 'all voxels')):
    f = summary[key]
    if f:
      out.append(f"tumour fraction of {what}: mean {_pct(f['mean'])}, min "
                 f"{_pct(f['min'])} ({f['min_case']}), max {_pct(f['max'])} "
                 f"({f['max_case']}), pooled {_pct(f['pooled'])}")
  out.append('cases without tumour: ' +
             (', '.join(summary['without_tumour']) or 'none'))
  out.append('labels copying an input channel: ' +
             (', '.join(summary['label_copies']) or 'none'))
  return '\n'.join(out)


def format_report(rows: list[dict], summary: dict) -> str:
  """The printed report: case table, intensity table, dataset summary."""
  return '\n\n'.join([case_table(rows), intensity_table(rows),
                      summary_text(summary)])


# ----------------------------------------------------------------- files


def montage_slice(volume: sources.Volume) -> tuple[sources.Volume, int]:
  """The volume cut to its montage slice (D = 1), and that slice's index."""
  brain = np.any(volume.image != 0, axis=-1)
  z = plots.largest_tumour_slice(volume.label, brain=brain)
  label = None if volume.label is None else volume.label[:, :, z:z + 1]
  return dataclasses.replace(volume, image=volume.image[:, :, z:z + 1].copy(),
                             label=None if label is None else label.copy()), z


def _brain_box(inside: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
  """The (H, W) slices around the brain of a slice, `margin` pixels wider."""
  if not inside.any():
    return slice(None), slice(None)
  box = []
  for axis in (1, 0):
    hits = np.flatnonzero(inside.any(axis=axis))
    box.append(slice(max(hits[0] - margin, 0), hits[-1] + margin + 1))
  return tuple(box)


def write_montage(volumes: Sequence[sources.Volume], path: str,
                  slices: Sequence[int] | None = None,
                  binary: bool = False) -> None:
  """A PNG: one row per case, one panel per channel, label overlaid in colour.

  Each row shows the axial slice of largest tumour cross-section (the
  largest brain cross-section without tumour), cropped to the brain, every
  channel windowed to its 1st-99th brain percentile on that slice. Written
  atomically (a temporary name, then os.replace).

  Args:
    volumes: cases (image (H, W, D, C), label (H, W, D) or None).
    path: the PNG to write.
    slices: the slice index to print per case (e.g. from `montage_slice`);
      default: the index within each volume.
    binary: labels are binary masks (the legend says 'tumour', not the
      BraTS names).
  """
  plt = plots.plt
  if not volumes:
    raise ValueError('no cases for the montage')
  cols = max(v.image.shape[-1] for v in volumes)
  fig, axes = plt.subplots(len(volumes), cols, figsize=(2.3 * cols,
                                                        2.5 * len(volumes)),
                           squeeze=False)
  drawn = []
  for i, volume in enumerate(volumes):
    brain = np.any(volume.image != 0, axis=-1)
    z = plots.largest_tumour_slice(volume.label, brain=brain)
    shown = z if slices is None else slices[i]
    inside = brain[..., z]
    box = _brain_box(inside)
    for c in range(cols):
      ax = axes[i, c]
      ax.axis('off')
      if c >= volume.image.shape[-1]:
        continue
      image = volume.image[..., z, c]
      values = image[inside] if inside.any() else image.ravel()
      lo, hi = np.percentile(values, PERCENTILES)
      ax.imshow(np.rot90(image[box]), cmap='gray', vmin=lo,
                vmax=max(hi, lo + 1e-6))
      if volume.label is not None:
        drawn.append(volume.label[..., z][box])
        ax.imshow(np.rot90(plots.label_rgba(drawn[-1])))
      ax.set_title(f'{volume.case_id}\n{checks.channel_name(volume, c)}  z={shown}',
                   fontsize=7)
  names = labels.BINARY.class_names if binary else labels.class_names()
  plots.add_label_legend(fig, plots.legend_entries(*drawn, names=names))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=plots.FIGURE_DPI)
  plt.close(fig)
  os.replace(tmp, path)


def write_json(data, path: str) -> None:
  """`data` as indented JSON, atomically (temporary name, then os.replace)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(data, f, indent=1)
  os.replace(tmp, path)


# ------------------------------------------------------------------- run


class Progress:
  """'inspected case 3/10 ID: 1.2 s/case, 0.1 min left' lines on a stream."""

  def __init__(self, total: int, stream=None):
    self.total, self.t0 = total, time.time()
    self.stream = stream or sys.stderr

  def update(self, done: int, case_id: str) -> None:
    per_case = (time.time() - self.t0) / max(done, 1)
    left = (self.total - done) * per_case
    print(f'inspected case {done}/{self.total} {case_id}: {per_case:.1f} '
          f's/case, {left / 60:.1f} min left', file=self.stream, flush=True)


def montage_picks(total: int, n: int) -> list[int]:
  """`n` case indices evenly spread over `total` (all if fewer)."""
  if n <= 0 or total == 0:
    return []
  return sorted({int(round(i)) for i in np.linspace(0, total - 1, min(n, total))})


def default_output(root: str) -> str:
  """`./inspect/<name of the data root>` (a datalist: its file's stem)."""
  path = os.path.normpath(os.path.abspath(root))
  name = os.path.basename(path)
  if os.path.isfile(path):
    name = os.path.splitext(name)[0]
  return os.path.join(os.getcwd(), 'inspect', name)


def inspect_dataset(config, output_dir: str | None = None, num_cases: int = 4,
                    stream=None, err=None) -> dict:
  """Inspects `config.data`'s dataset; prints the report, writes the files.

  Args:
    config: a full jaxseg config (`config.data.root`, `.modalities`).
    output_dir: where inspect.json and montage.png go; None: `default_output`.
    num_cases: cases in the montage (0: no montage).
    stream, err: report and progress/warning streams (stdout, stderr).

  Returns:
    {'root', 'output', 'modalities', 'thresholds', 'cases' (rows),
    'summary', 'tinted_images' [paths]}, as written to inspect.json.

  Raises:
    InputError: a bad config, a missing root or no cases; or, after the
      report is written, naming the first case that could not be read.
  """
  # Imported here: dataset -> pipeline -> this module (the label guard).
  stream, err = stream or sys.stdout, err or sys.stderr
  config_base.check_config(config)
  modalities = tuple(config.data.modalities)
  if not modalities:
    raise InputError('config.data.modalities', 'name at least one channel')
  root = dataset.resolve_root(config.data)
  cases = sources.discover_cases(root, config.data.get('formats'))
  output_dir = output_dir or default_output(root)
  picks = set(montage_picks(len(cases), num_cases))
  picked, flagged = [], []
  rows = []
  progress = Progress(len(cases), err)
  coco.take_tinted()                  # forget images read before this run
  for i, case in enumerate(cases):
    try:
      volume = sources.load_case(case, modalities)
    except InputError as e:
      rows.append(dict(case=case.case_id, error=str(e)))
      print(f'jaxseg: warning: {e}', file=err)
    else:
      row = case_summary(volume, case.scheme.values if case.label else ())
      rows.append(row)
      if row['label_copy']:
        where = case.label or case.case_id
        print(f"jaxseg: warning: {where}: {row['label_copy']['message']}",
              file=err)
        if len(flagged) < num_cases:
          flagged.append(montage_slice(volume))
      elif i in picks:
        picked.append(montage_slice(volume))
    progress.update(i + 1, case.case_id)
  tinted = coco.take_tinted()
  if tinted:
    print(f'jaxseg: warning: {coco.tinted_message(tinted, len(cases))}',
          file=err)
  summary = dataset_summary(rows)
  print(format_report(rows, summary), file=stream, flush=True)
  result = dict(root=os.path.abspath(root), output=os.path.abspath(output_dir),
                modalities=list(modalities),
                thresholds=dict(copy_correlation=checks.COPY_CORRELATION,
                                copy_dice=checks.COPY_DICE),
                cases=rows, summary=summary, tinted_images=tinted)
  write_json(result, os.path.join(output_dir, 'inspect.json'))
  shown = (flagged + picked)[:num_cases]
  if shown:
    write_montage([v for v, _ in shown],
                  os.path.join(output_dir, 'montage.png'),
                  slices=[z for _, z in shown],
                  binary=all(c.scheme.binary for c in cases))
  print(f'wrote {output_dir}/inspect.json' +
        (' and montage.png' if shown else ''), file=err)
  if summary['unreadable']:
    first = next(r for r in rows if 'error' in r)
    raise InputError(root, f"{len(summary['unreadable'])} of {len(rows)} cases "
                     f"could not be read; first: {first['error']}")
  return result


def define_flags() -> None:
  """The command line's flags (only when run as a program: jaxseg.main has
  its own --config and --output)."""
  config_flags.define_config()
  flags.DEFINE_string('output', None, 'Folder for inspect.json and '
                      'montage.png; default ./inspect/<data root name>.')
  flags.DEFINE_integer('cases', 4, 'Cases in the montage (0: none).',
                       lower_bound=0)
  flags.mark_flags_as_required(['config'])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = flags.FLAGS.config
  try:
    inspect_dataset(config, flags.FLAGS.output, flags.FLAGS.cases)
  except InputError as e:
    print(f'jaxseg: error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
