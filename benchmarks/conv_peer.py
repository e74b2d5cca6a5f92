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

The `oneDNN` column is jaxseg.onednn's convolution (oneDNN's primitives
through XLA's FFI, the weights reordered from HWIO on every call, the
weight gradient reordered back), each pass jitted alone like XLA's, ratio =
PyTorch time / its time; `--no-onednn` leaves it out (it is left out
anyway where the extension is not built). `--dtype=bfloat16` times bf16
operands on both sides (PyTorch's bf16 convolution, oneDNN's bf16 with f32
accumulation; XLA's modes too unless `--modes=none`), e.g.

    python benchmarks/conv_peer.py --dtype=bfloat16 --modes=none --shapes=1,2,4
"""

import argparse
import functools
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import xla_cpu
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


def _conv(x, w, conv=jax.lax.conv_general_dilated):
  return conv(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _xla_passes(x, w, dy, mode, conv=jax.lax.conv_general_dilated):
  """{pass: a blocking call of its compiled XLA program}, in `mode`, the
  convolution computed by `conv` (lax's, or jaxseg.onednn's)."""
  c = lambda x, w: _conv(x, w, conv)  # noqa: E731
  programs = {
      'forward': lambda x, w, dy: c(x, w),
      'input grad': lambda x, w, dy: jax.vjp(lambda x: c(x, w), x)[1](dy)[0],
      'weight grad': lambda x, w, dy: jax.vjp(lambda w: c(x, w), w)[1](dy)[0],
  }
  options = xla_cpu.compiler_options(mode)
  calls = {}
  for name, fn in programs.items():
    compiled = jax.jit(fn).lower(x, w, dy).compile(options)
    calls[name] = lambda c=compiled: jax.block_until_ready(c(x, w, dy))
  return calls


def _torch_passes(x, w, dy, dtype='float32'):
  """{pass: a call of PyTorch's kernel}, channels-last tensors of `dtype`."""
  import torch  # pylint: disable=g-import-not-at-top
  last = torch.channels_last
  tdt = getattr(torch, dtype)
  tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).to(tdt).contiguous(memory_format=last)
  tw = torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy()).to(tdt).contiguous()
  tdy = torch.from_numpy(np.asarray(dy).transpose(0, 3, 1, 2).copy()).to(tdt).contiguous(memory_format=last)

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
                      help="comma-separated JAXSEG_XLA_CPU modes ('' = default); "
                           "'none': no XLA column")
  parser.add_argument('--onednn', default=True,
                      action=argparse.BooleanOptionalAction,
                      help="time jaxseg.onednn's convolution too")
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'))
  parser.add_argument('--shapes', default='',
                      help='comma-separated indices into SHAPES (default all)')
  parser.add_argument('--clock', default='wall', choices=('wall', 'cpu'),
                      help="'cpu': process CPU time, a diagnostic for a "
                           "loaded machine with the process pinned to one "
                           "core (taskset -c 0; see timing.median_times)")
  args = parser.parse_args(argv)
  modes = [] if args.modes == 'none' else args.modes.split(',')
  shapes = ([SHAPES[int(i)] for i in args.shapes.split(',')] if args.shapes
            else SHAPES)
  import torch  # pylint: disable=g-import-not-at-top
  # The cores this process may use (taskset), as jaxseg.onednn counts them.
  torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else os.cpu_count() or 1)
  columns = [(f'XLA {m or "default"}', m) for m in modes]
  if args.onednn:
    from jaxseg import onednn  # pylint: disable=g-import-not-at-top
    if onednn.available():
      columns.append(('oneDNN', 'onednn'))
    else:
      print(f'jaxseg.onednn not available: {onednn.unavailable_reason()}')
  print(f'jax {jax.__version__}, torch {torch.__version__} '
        f'({torch.get_num_threads()} threads), {os.cpu_count()} CPU cores, '
        f'{args.dtype}; median {args.clock} time of {args.repeats}, '
        f'interleaved; '
        f'ratio = torch time / jaxseg time; '
        f'columns: {", ".join(name for name, _ in columns)}')
  header = ['shape (N, H, Cin -> Cout)', 'pass', 'torch ms']
  for name, _ in columns:
    header += [f'{name} ms', 'ratio']
  print('| ' + ' | '.join(header + ['load avg']) + ' |')
  print('|' + '---|' * (len(header) + 1))
  rng = np.random.default_rng(0)
  dtype = jax.numpy.dtype(args.dtype)
  for n, h, c, o in shapes:
    x = rng.normal(size=(n, h, h, c)).astype(np.float32)
    w = (rng.normal(size=(3, 3, c, o)) / np.sqrt(9 * c)).astype(np.float32)
    dy = rng.normal(size=(n, h, h, o)).astype(np.float32)
    xj, wj, dyj = (jax.device_put(a.astype(dtype)) for a in (x, w, dy))
    peer = _torch_passes(x, w, dy, args.dtype)
    ours = {}
    for _, m in columns:
      if m == 'onednn':
        conv = functools.partial(onednn.conv_general_dilated, fallback=False)
        ours[m] = _xla_passes(xj, wj, dyj, '', conv)
      else:
        ours[m] = _xla_passes(xj, wj, dyj, m)
    for name in PASSES:
      fns = {'torch': peer[name]}
      fns.update({m: ours[m][name] for _, m in columns})
      load = load_average()
      t = median_times(fns, args.repeats, warmup=2, pause=0.05, settle=2,
                       clock=args.clock)
      row = [f'{n}x{h}x{h}, {c} -> {o}', name, f'{1e3 * t["torch"]:.1f}']
      for _, m in columns:
        row += [f'{1e3 * t[m]:.1f}', f'{t["torch"] / t[m]:.2f}']
      print('| ' + ' | '.join(row + [f'{load:.1f}']) + ' |', flush=True)


if __name__ == '__main__':
  main()
