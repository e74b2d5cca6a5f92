"""benchmarks/gpu.py in --smoke mode: every kind of row runs, the table and the
JSON are written, and a slow row or a spent budget becomes a note."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow

SCRIPT = REPO / 'benchmarks' / 'gpu.py'
# One row of every kind (the step rows differ only in their config keys).
ROWS = ('peak,unet3d:f32,unet3d:bf16,unet3d:augment-device,'
        'unet3d:augment-host,resunet:mc-dropout,torch:unet')


def _run(out, *flags, timeout=600):
  result = subprocess.run([sys.executable, str(SCRIPT), '--smoke',
                           f'--out={out}', *flags], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / 'gpu_benchmark.json') as f:
    report = json.load(f)
  table = (out / 'gpu_benchmark.md').read_text()
  return report, table, result.stdout


@pytest.fixture(scope='module')
def smoke(tmp_path_factory, cache_dir):
  out = tmp_path_factory.mktemp('gpu')
  return _run(out, f'--rows={ROWS}', '--inline')


def test_every_kind_of_row_runs(smoke):
  report, table, stdout = smoke
  rows = {(r['row'], r.get('precision')): r for r in report['rows']}
  # In the script's run order, whatever the order asked.
  assert [r['row'] for r in report['rows']] == [
      'peak', 'unet3d:f32', 'unet3d:bf16', 'unet3d:augment-device',
      'unet3d:augment-host', 'resunet:mc-dropout', 'torch:unet', 'torch:unet']
  for r in report['rows']:
    assert 'skipped' not in r, r
  peak = rows['peak', 'float32']
  assert peak['bf16_flops_per_s'] > 0 and peak['f32_flops_per_s'] > 0
  step = rows['unet3d:f32', 'float32']
  assert step['input'] == [2, 16, 16, 16, 4]
  assert step['images_per_s'] == pytest.approx(2 / step['step_s'])
  assert step['voxels_per_s'] == pytest.approx(2 * 16 ** 3 / step['step_s'])
  assert step['mfu'] == pytest.approx(
      step['model_flops'] / step['step_s'] / peak['bf16_flops_per_s'])
  augment = rows['unet3d:augment-device', 'float32']
  assert augment['loader_over_step'] == pytest.approx(
      augment['loader_batches_per_s'] * augment['step_s'])
  host = rows['unet3d:augment-host', 'float32']
  assert host['loader_batches_per_s'] > 0 and 'x the unet3d:f32' in \
      host['note']
  mc = rows['resunet:mc-dropout', 'float32']
  assert mc['max_abs_diff'] < 1e-4 and mc['vmap_s'] > 0 and mc['loop_s'] > 0
  # The torch rows: f32 and AMP, MFU from the jax step's FLOPs (none timed
  # for unet here, so no MFU).
  assert rows['torch:unet', 'amp-bf16']['step_s'] > 0
  assert rows['torch:unet', 'float32']['images_per_s'] > 0


def test_one_markdown_table_with_the_anchor(smoke):
  report, table, stdout = smoke
  lines = [l for l in table.splitlines() if l.startswith('|')]
  assert lines[0].startswith('| row | model |') and 'MFU' in lines[0]
  assert len(lines) == 2 + len(report['rows'])
  assert all(l.count('|') == lines[0].count('|') for l in lines)
  assert '27.5 images/s' in table and table in stdout
  assert report['smoke'] and report['machine']['jax']


def test_a_slow_row_is_killed_and_a_spent_budget_skips(tmp_path, cache_dir):
  """Each row in its own process: one over its limit becomes a note."""
  report, table, _ = _run(tmp_path / 'a', '--rows=peak,unet:f32',
                          '--limit=unet:f32=1')
  peak, unet = report['rows']
  assert 'skipped' not in peak and peak['bf16_flops_per_s'] > 0
  assert 'limit: killed' in unet['skipped'] and 'skipped: still running' in table
  report, table, _ = _run(tmp_path / 'b', '--rows=resunet', '--budget=0')
  assert len(report['rows']) == 3            # resunet:* rows, none started
  assert all('budget is spent' in r['skipped'] for r in report['rows'])
