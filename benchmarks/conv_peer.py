"""The 3x3 convolution alone: XLA:CPU against PyTorch (oneDNN), pass by pass.

    python benchmarks/conv_peer.py               # U-Net shapes, 7 repeats
    python benchmarks/conv_peer.py --repeats=15 --modes=,xla

A train step of the 2D U-Nets spends most of its time in 3x3 convolutions.
This times one such convolution (NHWC, 'SAME', no bias) at the shapes of the
study U-Nets' levels, separately for its three passes: the forward pass,
the input gradient (dL/dx) and the weight gradient (dL/dw), each one jitted
XLA program against PyTorch's `F.conv2d` / `aten.convolution_backward` on
channels-last tensors, calls interleaved with a 50 ms pause (OpenMP's
threads spin on after a call) and two untimed calls of the same pass just
before each timed one (threads awake again; `timing.median_times`).
`--modes` lists the XLA:CPU modes to compare in one run (jaxseg/xla_cpu.py:
'' is jaxseg's default, convolutions in XLA's Eigen code; 'xla' XLA's own
defaults, convolutions in YNNPACK), applied as compile options.

Ratio = PyTorch time / XLA time (above 1: XLA faster). The whole step
cannot beat PyTorch while the convolution does not: this table is the
ceiling for benchmarks/peer_torch.py (docs/speed.md).
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxseg import xla_cpu  # noqa: E402
xla_cpu.configure()  # jaxseg's allocator settings, before JAX's backend

from timing import load_average, median_times  # noqa: E402  (benchmarks/timing.py)

import jax  # noqa: E402
import numpy as np  # noqa: E402

# (batch, height = width, input channels, output channels): the levels of
# the features-16 U-Net at 128x128 (peer_torch.py's unet16_group), its
# first layer on 4 modalities, and the ResU-Net's 64x64 input stage.
SHAPES = ((16, 128, 4, 16), (16, 128, 16, 16), (16, 64, 32, 32),
          (16, 32, 64, 64), (16, 16, 128, 128), (16, 64, 4, 64),
          (16, 32, 128, 128))
PASSES = ('forward', 'input grad', 'weight grad')


def _conv(x, w):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _xla_passes(x, w, dy, mode):
  """{pass: a blocking call of its compiled XLA program}, in `mode`."""
  programs = {
      'forward': lambda x, w, dy: _conv(x, w),
      'input grad': lambda x, w, dy: jax.vjp(lambda x: _conv(x, w), x)[1](dy)[0],
      'weight grad': lambda x, w, dy: jax.vjp(lambda w: _conv(x, w), w)[1](dy)[0],
  }
  options = xla_cpu.compiler_options(mode)
  calls = {}
  for name, fn in programs.items():
    compiled = jax.jit(fn).lower(x, w, dy).compile(options)
    calls[name] = lambda c=compiled: jax.block_until_ready(c(x, w, dy))
  return calls


def _torch_passes(x, w, dy):
  """{pass: a call of PyTorch's kernel}, channels-last tensors."""
  import torch  # pylint: disable=g-import-not-at-top
  last = torch.channels_last
  tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).contiguous(memory_format=last)
  tw = torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy()).contiguous()
  tdy = torch.from_numpy(np.asarray(dy).transpose(0, 3, 1, 2).copy()).contiguous(memory_format=last)

  def backward(which):
    return lambda: torch.ops.aten.convolution_backward(
        tdy, tx, tw, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, which)
  return {'forward': lambda: torch.nn.functional.conv2d(tx, tw, padding=1),
          'input grad': backward([True, False, False]),
          'weight grad': backward([False, True, False])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--modes', default=',xla',
                      help="comma-separated JAXSEG_XLA_CPU modes ('' = default)")
  args = parser.parse_args(argv)
  modes = args.modes.split(',')
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  print(f'jax {jax.__version__}, torch {torch.__version__} '
        f'({torch.get_num_threads()} threads), {os.cpu_count()} CPU cores; '
        f'median of {args.repeats}, interleaved; ratio = torch time / XLA time; '
        f'modes: {", ".join(repr(m) for m in modes)}')
  header = ['shape (N, H, Cin -> Cout)', 'pass', 'torch ms']
  for m in modes:
    header += [f'XLA {m or "default"} ms', 'ratio']
  print('| ' + ' | '.join(header + ['load avg']) + ' |')
  print('|' + '---|' * (len(header) + 1))
  rng = np.random.default_rng(0)
  for n, h, c, o in SHAPES:
    x = rng.normal(size=(n, h, h, c)).astype(np.float32)
    w = (rng.normal(size=(3, 3, c, o)) / np.sqrt(9 * c)).astype(np.float32)
    dy = rng.normal(size=(n, h, h, o)).astype(np.float32)
    xj, wj, dyj = map(jax.device_put, (x, w, dy))
    peer = _torch_passes(x, w, dy)
    ours = {m: _xla_passes(xj, wj, dyj, m) for m in modes}
    for name in PASSES:
      fns = {'torch': peer[name]}
      fns.update({m: ours[m][name] for m in modes})
      load = load_average()
      t = median_times(fns, args.repeats, warmup=2, pause=0.05, settle=2)
      row = [f'{n}x{h}x{h}, {c} -> {o}', name, f'{1e3 * t["torch"]:.1f}']
      for m in modes:
        row += [f'{1e3 * t[m]:.1f}', f'{t["torch"] / t[m]:.2f}']
      print('| ' + ' | '.join(row + [f'{load:.1f}']) + ' |', flush=True)


if __name__ == '__main__':
  main()
