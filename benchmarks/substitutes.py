"""Which CPU substitute the oneDNN convolution retires: forward + backward, ms.

    taskset -c 0 python benchmarks/substitutes.py --clock=cpu   # one core
    python benchmarks/substitutes.py                            # wall time

For each layer of the zoo that had a hand-written CPU substitute, one jitted
grad of sum(layer(x)^2) w.r.t. input and parameters, median of --repeats,
calls of the columns interleaved (timing.median_times):
  xla      XLA's native op (lax conv / conv_transpose / reduce-window pool)
  subst    the substitute (depth-sliced 3D conv, sub-pixel transposed conv,
           reshape + argmax pool)
  onednn   jaxseg.onednn (conv and transposed conv; pools: n/a)
  torch    PyTorch's layer (oneDNN), autograd, channels-last where it helps
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# oneDNN's OpenMP threads: the cores this process may use (taskset).
os.environ.setdefault('JAXSEG_ONEDNN_THREADS', str(len(os.sched_getaffinity(0))))
from jaxseg import xla_cpu  # noqa: E402
xla_cpu.configure()
from timing import load_average, median_times  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg import onednn  # noqa: E402
from jaxseg.models import convolution, sampling  # noqa: E402


def _grad(loss, args):
  g = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
  return lambda: jax.block_until_ready(g(*args))


def _torch(layer, x):
  import torch
  perm = (0, x.ndim - 1) + tuple(range(1, x.ndim - 1))
  fmt = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
  xt = torch.from_numpy(np.asarray(x).transpose(perm).copy()).contiguous(memory_format=fmt)
  xt.requires_grad_()
  params = list(layer.parameters()) if hasattr(layer, 'parameters') else []
  if hasattr(layer, 'to'):
    layer.to(memory_format=fmt)
  def step():
    loss = (layer(xt) ** 2).sum()
    torch.autograd.grad(loss, [xt] + params)
  return step


def cases():
  import torch
  rng = np.random.default_rng(0)
  sq = lambda f: (lambda *a: jnp.sum(f(*a) ** 2))  # noqa: E731
  for shape in ((2, 64, 64, 64, 8), (2, 32, 32, 32, 16), (2, 16, 16, 16, 64),
                (2, 32, 32, 32, 4)):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    c = shape[-1]
    o = max(c, 8)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, c, o)) * 0.1, jnp.float32)
    dn = ('NDHWC', 'DHWIO', 'NDHWC')
    yield (f'conv 3x3x3 {c}->{o}', shape, {
        'xla': _grad(sq(lambda x, w: lax.conv_general_dilated(x, w, (1,) * 3, 'SAME', dimension_numbers=dn)), (x, w)),
        'subst': _grad(sq(lambda x, w: convolution.conv_general_dilated(x, w, (1,) * 3, 'SAME', dimension_numbers=dn, kernels='cpu')), (x, w)),
        'onednn': _grad(sq(lambda x, w: onednn.conv_general_dilated(x, w, (1,) * 3, 'SAME', dimension_numbers=dn)), (x, w)),
        'torch': _torch(torch.nn.Conv3d(c, o, 3, padding=1, bias=False), x)})
  for shape, nd in (((16, 64, 64, 64), 2), ((16, 32, 32, 128), 2),
                    ((2, 16, 16, 16, 64), 3), ((2, 32, 32, 32, 32), 3)):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    c = shape[-1]
    for k, pad in ((2, 'VALID'), (3, 'SAME')):
      w = jnp.asarray(rng.normal(size=(k,) * nd + (c, c // 2)) * 0.1, jnp.float32)
      s = (2,) * nd
      T = torch.nn.ConvTranspose2d if nd == 2 else torch.nn.ConvTranspose3d
      tm = T(c, c // 2, k, stride=2, padding=1 if k == 3 else 0,
             output_padding=1 if k == 3 else 0, bias=False)
      sub = sampling.ConvTranspose(c // 2, (k,) * nd, strides=s, padding=pad, use_bias=False, kernels='cpu')
      yield (f'conv-transpose {k}^{nd}/2 {c}->{c // 2}', shape, {
          'xla': _grad(sq(lambda x, w: lax.conv_transpose(x, w, s, pad)), (x, w)),
          'subst': _grad(sq(lambda x, w: sub.apply({'params': {'kernel': w}}, x)), (x, w)),
          'onednn': _grad(sq(lambda x, w: onednn.conv_transpose(x, w, s, pad)), (x, w)),
          'torch': _torch(tm, x)})
  for shape in ((16, 128, 128, 16), (16, 32, 32, 64), (2, 64, 64, 64, 8),
                (2, 32, 32, 32, 32)):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    nd = len(shape) - 2
    F = torch.nn.functional
    tp = (lambda t: F.max_pool2d(t, 2)) if nd == 2 else (lambda t: F.max_pool3d(t, 2))
    yield (f'max-pool 2/2 {nd}D', shape, {
        'xla': _grad(sq(lambda x: nn.max_pool(x, (2,) * nd, strides=(2,) * nd)), (x,)),
        'subst': _grad(sq(lambda x: sampling.max_pool(x, 2, kernels='cpu')), (x,)),
        'torch': _torch(tp, x)})


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--repeats', type=int, default=7)
  p.add_argument('--clock', default='wall', choices=('wall', 'cpu'))
  args = p.parse_args(argv)
  import torch
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  print(f'{threads} core(s), clock {args.clock}, median of {args.repeats}, '
        f'load {load_average():.2f}; ms, and torch time / column time')
  cols = ('xla', 'subst', 'onednn', 'torch')
  print('| layer | input | ' + ' | '.join(cols) + ' | torch/xla | torch/subst | torch/onednn |')
  print('|---|---|' + '---|' * (len(cols) + 3))
  for name, shape, fns in cases():
    t = median_times(fns, args.repeats, clock=args.clock, settle=2)
    ms = {k: 1000 * v for k, v in t.items()}
    ratio = lambda k: f'{ms["torch"] / ms[k]:.2f}' if k in ms else '-'  # noqa: E731
    print(f'| {name} | {"x".join(map(str, shape))} | ' +
          ' | '.join(f'{ms[k]:.1f}' if k in ms else '-' for k in cols) +
          f' | {ratio("xla")} | {ratio("subst")} | {ratio("onednn")} |', flush=True)
  print(f'load after: {load_average():.2f}')


if __name__ == '__main__':
  main()
