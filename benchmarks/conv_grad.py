"""Convolution forward, input gradient and weight gradient: JAX vs PyTorch.

    python benchmarks/conv_grad.py                   # all shapes, all variants
    python benchmarks/conv_grad.py --shapes=0 --repeats=3 --hlo=/tmp/dw.txt

For each shape of the zoo (stride 1, 'SAME', channels-last), times in one
run, as medians of `--repeats` calls after a warm-up:
  * JAX forward, input gradient and weight gradient (the pieces of
    `jax.vjp` of `lax.conv_general_dilated`, each jitted on its own), once
    with XLA's default CPU pipeline and once with its YNNPACK library fusion
    switched off for that jit (`compiler_options=NO_YNN`);
  * weight-gradient alternatives (the `dW` column of the second table):
    'im2col' (shifted slices stacked into (N*S, k^d*Cin) patches, one
    matmul), 'shift' (one (Cin, N*S) x (N*S, Cout) product per kernel tap,
    no patch tensor), 'nchw' (the XLA gradient in NCHW / OIHW layouts),
    'folded' (the gradient written by hand as the convolution XLA derives:
    Cin as batch, N as features, dY as a window-sized kernel);
  * PyTorch: `F.conv2d`/`conv3d` forward under `torch.no_grad`, input and
    weight gradients by autograd (`torch.autograd.grad`), NCHW;
  * a plain `x.T @ y` with the weight gradient's FLOPs and shapes
    ((N*S, k^d*Cin)^T (N*S, Cout)): what one matmul achieves here.

Ratios in the tables are taken in the same run; the machine is shared, so
absolute times vary between runs.
"""

import argparse
import itertools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxseg import xla_cpu  # noqa: E402
xla_cpu.configure()  # jaxseg's XLA:CPU mode, before JAX starts its backend

import fastconv  # noqa: E402  (benchmarks/fastconv.py)
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

# (name, input shape channels-last, kernel size, output channels)
SHAPES = (
    ('2D 3x3 32->32 @128', (16, 128, 128, 32), 3, 32),
    ('2D 3x3 4->32 @128 (first layer)', (16, 128, 128, 4), 3, 32),
    ('2D 3x3 64->64 @64', (16, 64, 64, 64), 3, 64),
    ('2D 3x3 128->128 @32', (16, 32, 32, 128), 3, 128),
    ('3D 3x3x3 16->16 @32^3', (2, 32, 32, 32, 16), 3, 16),
)
NO_YNN = fastconv.NO_YNN


def median_ms(fn, *args, repeats: int) -> float:
  return 1e3 * median_time(lambda: jax.block_until_ready(fn(*args)), repeats)


def compiled(fn, *args, options=None):
  return jax.jit(fn).lower(*args).compile(compiler_options=options)


def conv(x, w):
  return fastconv.lax_conv(x, w)


def dw_xla(x, dy, k=3):
  w = jnp.zeros((k,) * (x.ndim - 2) + (x.shape[-1], dy.shape[-1]))
  return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]


def patches(x, k: int):
  """(N, *S, C) -> (N, *S, k^d, C): the 'SAME' stride-1 shifted copies."""
  nd = x.ndim - 2
  lo = (k - 1) // 2
  xp = jnp.pad(x, ((0, 0),) + ((lo, k - 1 - lo),) * nd + ((0, 0),))
  spatial = x.shape[1:-1]
  taps = []
  for off in itertools.product(range(k), repeat=nd):
    index = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(off, spatial))
    taps.append(xp[index])
  return jnp.stack(taps, axis=-2)


def dw_im2col(x, dy, k=3):
  nd = x.ndim - 2
  p = patches(x, k).reshape(-1, k ** nd * x.shape[-1])
  d = dy.reshape(-1, dy.shape[-1])
  return (p.T @ d).reshape((k,) * nd + (x.shape[-1], dy.shape[-1]))


def dw_shift(x, dy, k=3):
  return fastconv.weight_grad_shift(x, dy, (k,) * (x.ndim - 2))


def dw_nchw(xc, dyc):
  """x (N, C, *S), dY (N, O, *S) -> dW (O, I, *k)."""
  nd = xc.ndim - 2
  spec = ('NCHW', 'OIHW', 'NCHW') if nd == 2 else ('NCDHW', 'OIDHW', 'NCDHW')
  w = jnp.zeros((dyc.shape[1], xc.shape[1]) + (3,) * nd)
  f = lambda w: lax.conv_general_dilated(  # noqa: E731
      xc, w, (1,) * nd, 'SAME', dimension_numbers=spec)
  return jax.vjp(f, w)[1](dyc)[0]


def dw_folded(x, dy, k=3):
  """The convolution XLA derives for dW, written out: batch <-> features."""
  nd = x.ndim - 2
  lo = (k - 1) // 2
  sp = 'DHW'[-nd:]
  out = lax.conv_general_dilated(
      x, dy, (1,) * nd, ((lo, k - 1 - lo),) * nd,
      dimension_numbers=('C' + sp + 'N', 'I' + sp + 'O', 'N' + sp + 'C'))
  return jnp.moveaxis(out, 0, -2)  # (Cin, *k, Cout) -> (*k, Cin, Cout)


def jax_row(x, w, dy, repeats, options):
  f = compiled(conv, x, w, options=options)
  gx = compiled(lambda w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0],
                w, dy, options=options)
  gw = compiled(dw_xla, x, dy, options=options)
  return (median_ms(f, x, w, repeats=repeats),
          median_ms(gx, w, dy, repeats=repeats),
          median_ms(gw, x, dy, repeats=repeats))


def torch_row(x, w, dy, repeats):
  import torch
  xt = torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy())
  wt = torch.from_numpy(np.moveaxis(np.asarray(w), (-2, -1), (1, 0)).copy())
  dyt = torch.from_numpy(np.moveaxis(np.asarray(dy), -1, 1).copy())
  fn = torch.nn.functional.conv2d if x.ndim == 4 else torch.nn.functional.conv3d
  pad = w.shape[0] // 2

  def fwd():
    with torch.no_grad():
      return fn(xt, wt, padding=pad)

  def grad(wrt):
    xr = xt.clone().requires_grad_(wrt == 'x')
    wr = wt.clone().requires_grad_(wrt == 'w')
    y = fn(xr, wr, padding=pad)
    return torch.autograd.grad(y, xr if wrt == 'x' else wr, dyt)[0]

  def timed(f):
    return 1e3 * median_time(f, repeats)

  return timed(fwd), timed(lambda: grad('x')), timed(lambda: grad('w'))


def alternatives(x, dy, repeats):
  xc = jnp.moveaxis(x, -1, 1)
  dyc = jnp.moveaxis(dy, -1, 1)
  rows = {}
  for name, fn, args in (('xla', dw_xla, (x, dy)),
                         ('im2col', dw_im2col, (x, dy)),
                         ('shift', dw_shift, (x, dy)),
                         ('nchw', dw_nchw, (xc, dyc)),
                         ('folded', dw_folded, (x, dy))):
    rows[name] = tuple(
        median_ms(compiled(fn, *args, options=o), *args, repeats=repeats)
        for o in (None, NO_YNN))
  return rows


def matmul_ms(x, dy, k, repeats):
  kk = k ** (x.ndim - 2) * x.shape[-1]
  a = jnp.ones((x.size // x.shape[-1], kk), jnp.float32)
  b = dy.reshape(-1, dy.shape[-1])
  return median_ms(compiled(lambda a, b: a.T @ b, a, b), a, b, repeats=repeats)


def library_fusions(text: str) -> str:
  kinds = sorted({line.split('"kind":"')[1].split('"')[0]
                  for line in text.splitlines() if '"kind":"__' in line})
  convs = [line.strip()[:200] for line in text.splitlines()
           if ' convolution(' in line]
  return f'library fusions {kinds or "none"}; ' + ' | '.join(convs)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shapes', default=','.join(map(str, range(len(SHAPES)))))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--hlo', default='', help='write the optimised HLO of '
                      'the first shape\'s weight gradient (default pipeline) here')
  parser.add_argument('--no-torch', action='store_true')
  args = parser.parse_args(argv)
  print(f'jax {jax.__version__}, {os.cpu_count()} CPU cores; '
        f'median of {args.repeats}; times in ms')
  rng = np.random.default_rng(0)
  table1, table2 = [], []
  for index in map(int, args.shapes.split(',')):
    name, shape, k, cout = SHAPES[index]
    nd = len(shape) - 2
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k,) * nd + (shape[-1], cout)) * 0.1,
                    jnp.float32)
    dy = jnp.asarray(rng.normal(size=shape[:-1] + (cout,)), jnp.float32)
    gflop = 2 * np.prod(shape) * cout * k ** nd / 1e9
    for options in (None, NO_YNN):
      text = compiled(dw_xla, x, dy, options=options).as_text()
      label = 'default' if options is None else 'no-YNN'
      print(f'[{name}] dW HLO ({label}): {library_fusions(text)}')
      if args.hlo and options is None and not table1:
        with open(args.hlo, 'w') as f:
          f.write(text)
    jd = jax_row(x, w, dy, args.repeats, None)
    jn = jax_row(x, w, dy, args.repeats, NO_YNN)
    tt = (float('nan'),) * 3 if args.no_torch else torch_row(x, w, dy, args.repeats)
    mm = matmul_ms(x, dy, k, args.repeats)
    table1.append((name, gflop, jd, jn, tt, mm))
    table2.append((name, alternatives(x, dy, args.repeats), tt[2]))
    print(f'[{name}] done', flush=True)

  print('\n| shape | GFLOP | fwd JAX / no-YNN / torch | dX JAX / no-YNN / torch '
        '| dW JAX / no-YNN / torch | matmul, same FLOPs | dW: JAX/torch, '
        'no-YNN/torch |')
  print('|---|---|---|---|---|---|---|')
  for name, gflop, jd, jn, tt, mm in table1:
    cells = ' | '.join(f'{a:.0f} / {b:.0f} / {c:.0f}' for a, b, c in zip(jd, jn, tt))
    print(f'| {name} | {gflop:.2f} | {cells} | {mm:.0f} | '
          f'{jd[2] / tt[2]:.2f}x, {jn[2] / tt[2]:.2f}x |')
  print('\nWeight-gradient alternatives, ms (default pipeline / YNN off):')
  names = list(table2[0][1])
  print('| shape | ' + ' | '.join(names) + ' | torch |')
  print('|---|' + '---|' * (len(names) + 1))
  for name, rows, torch_ms in table2:
    print(f'| {name} | ' + ' | '.join(f'{a:.0f} / {b:.0f}' for a, b in rows.values())
          + f' | {torch_ms:.0f} |')


if __name__ == '__main__':
  main()
