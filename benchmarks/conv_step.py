"""One training step of the 2D U-Net: XLA's defaults, jaxseg's settings, PyTorch.

    python benchmarks/conv_step.py                  # batch 16, 128x128x4
    python benchmarks/conv_step.py --batch=4 --steps=2 --no-torch

jaxseg 'unet' (norm='group', features=16, depth=4: 1.94M parameters, the
configuration of issue 7), sigmoid cross-entropy, Adam; one jitted step
(forward, backward, update), median of `--steps` after a compiling step.
The process starts with XLA's defaults (JAXSEG_XLA_CPU=xla) and each variant
sets its own `compiler_options` (jaxseg/xla_cpu.py):
  * 'XLA defaults + flax layers': model.kernels='native' (nn.max_pool /
    nn.ConvTranspose / flax's norms), YNNPACK on for convolutions (jaxseg
    before issue 7);
  * 'YNN convs off + flax layers': flax's layers with jaxseg's default
    option (convolutions out of YNNPACK);
  * 'XLA defaults + jaxseg layers': jaxseg's CPU substitutes (kernels='cpu')
    with XLA's defaults;
  * 'jaxseg': the models and the option as a run gets them;
  * 'jaxseg + JAXSEG_XLA_CPU=fast': YNNPACK for dots only;
  * 'jaxseg + fast + fastconv': also the matmul weight gradient of
    benchmarks/fastconv.py for the 2D convolutions;
  * PyTorch: the same network (buda's layout, GroupNorm of 8-channel
    groups), same loss and optimiser, NCHW, `torch.get_num_threads()`.
Ratios are measured in the same run.
"""

import argparse
import contextlib
import os

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ['JAXSEG_XLA_CPU'] = 'xla'  # XLA's defaults; variants set options

from jaxseg import models  # noqa: E402
import fastconv  # noqa: E402  (benchmarks/fastconv.py)
from timing import median_time  # noqa: E402  (benchmarks/timing.py)
from jaxseg import xla_cpu  # noqa: E402
from jaxseg.models import unet  # noqa: E402


@contextlib.contextmanager
def patched_unet(fast_convs: bool):
  """While active, jaxseg.models.unet's convolutions are fastconv.Conv."""
  saved = unet.Conv
  if fast_convs:
    unet.Conv = lambda *a, kernels='auto', **kw: fastconv.Conv(*a, **kw)
  try:
    yield
  finally:
    unet.Conv = saved


def jax_step(batch, size, _, channels, steps, fast, flax_layers, options):
  model = models.build(dict(name='unet', norm='group', features=16, depth=4,
                            kernels='native' if flax_layers else 'cpu'))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
  y = jnp.asarray(rng.random((batch, size, size, 1)) < 0.2, jnp.float32)
  tx = optax.adam(1e-3)

  def step(params, opt, x, y):
    def loss(p):
      logits = model.apply({'params': p}, x, train=True)
      return optax.sigmoid_binary_cross_entropy(logits, y).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value

  with patched_unet(fast):
    params = model.init(jax.random.key(0), x[:1], train=False)['params']
    opt = tx.init(params)
    compiled = jax.jit(step).lower(params, opt, x, y).compile(
        compiler_options=options)
  count = sum(p.size for p in jax.tree.leaves(params))
  carry = [params, opt]

  def one():
    carry[:] = compiled(*carry, x, y)[:2]
    jax.block_until_ready(carry[0])
  return median_time(one, steps), count


def torch_step(batch, size, _, channels, steps, features=16, depth=4):
  import torch
  tnn = torch.nn

  def block(cin, c):
    return tnn.Sequential(
        tnn.Conv2d(cin, c, 3, padding=1, bias=False), tnn.GroupNorm(c // 8, c),
        tnn.ReLU(), tnn.Conv2d(c, c, 3, padding=1, bias=False),
        tnn.GroupNorm(c // 8, c), tnn.ReLU())

  class Net(tnn.Module):

    def __init__(self):
      super().__init__()
      w = [features * 2 ** i for i in range(depth + 1)]
      self.enc = tnn.ModuleList(
          [block(channels if i == 0 else w[i - 1], w[i]) for i in range(depth)])
      self.bottleneck = block(w[depth - 1], w[depth])
      self.up = tnn.ModuleList(
          [tnn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(depth)])
      self.dec = tnn.ModuleList([block(2 * w[i], w[i]) for i in range(depth)])
      self.head = tnn.Conv2d(features, 1, 1)

    def forward(self, x):
      skips = []
      for enc in self.enc:
        x = enc(x)
        skips.append(x)
        x = torch.nn.functional.max_pool2d(x, 2)
      x = self.bottleneck(x)
      for i in reversed(range(depth)):
        x = self.dec[i](torch.cat([self.up[i](x), skips[i]], dim=1))
      return self.head(x)

  torch.manual_seed(0)
  net = Net()
  opt = torch.optim.Adam(net.parameters(), 1e-3)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.normal(size=(batch, channels, size, size)).astype(np.float32))
  y = torch.from_numpy((rng.random((batch, 1, size, size)) < 0.2).astype(np.float32))
  loss_fn = tnn.BCEWithLogitsLoss()

  def one():
    opt.zero_grad()
    loss_fn(net(x), y).backward()
    opt.step()

  return median_time(one, steps), sum(p.numel() for p in net.parameters())


# name: (fastconv, flax max-pool / ConvTranspose, compiler_options)
VARIANTS = {
    'XLA defaults + flax layers': (False, True, None),
    'YNN convs off + flax layers': (False, True, xla_cpu.compiler_options()),
    'XLA defaults + jaxseg layers': (False, False, None),
    'jaxseg': (False, False, xla_cpu.compiler_options()),
    'jaxseg + JAXSEG_XLA_CPU=fast': (False, False,
                                     xla_cpu.compiler_options('fast')),
    'jaxseg + fast + fastconv': (True, False, xla_cpu.compiler_options('fast')),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--channels', type=int, default=4)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--only', default=','.join(VARIANTS))
  parser.add_argument('--no-torch', action='store_true')
  args = parser.parse_args(argv)
  shape = (args.batch, args.size, args.size, args.channels)
  rows = {}
  for name in args.only.split(','):
    rows[name] = jax_step(*shape, args.steps, *VARIANTS[name])
    print(f'{name}: {rows[name][0] * 1e3:.0f} ms ({rows[name][1]:,} params)',
          flush=True)
  if not args.no_torch:
    rows['PyTorch'] = torch_step(*shape, args.steps)
    print(f'PyTorch: {rows["PyTorch"][0] * 1e3:.0f} ms '
          f'({rows["PyTorch"][1]:,} params)', flush=True)
  base = next(iter(rows.values()))[0]
  ref = rows.get('PyTorch', (float('nan'),))[0]
  print(f'\nU-Net step, input {shape}, median of {args.steps}')
  print(f'| variant | ms/step | speed-up vs {next(iter(rows))} | speed vs PyTorch |')
  print('|---|---|---|---|')
  for name, (t, _) in rows.items():
    print(f'| {name} | {t * 1e3:.0f} | {base / t:.2f}x | {ref / t:.2f}x |')


if __name__ == '__main__':
  main()
