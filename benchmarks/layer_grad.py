"""Forward + backward of the U-Nets' layers: flax vs jaxseg vs PyTorch.

    python benchmarks/layer_grad.py                 # U-Net shapes at 128x128
    python benchmarks/layer_grad.py --repeats=3 --no-torch

For the down- and up-sampling layers of the 2D U-Nets (batch 16, 128x128
input, features 16..128), one jitted `jax.grad` of sum(layer(x)^2) with
respect to the input and the parameters, median of `--repeats` calls:
  * 'flax': nn.max_pool / nn.ConvTranspose (reduce-window and
    select-and-scatter; a convolution with a dilated input);
  * 'jaxseg': jaxseg.models.sampling (reshape + argmax with a first-max
    gradient; oneDNN's deconvolution on the CPU), as the models use them;
  * 'torch': F.max_pool2d / nn.ConvTranspose2d, autograd, NCHW.
GroupNorm + ReLU (the U-Net's norm) is timed for scale. Last, the 3x3x3
convolution of the 3D U-Nets: flax nn.Conv (XLA's 3D convolution) against
jaxseg.models.convolution.Conv (oneDNN's on the CPU) and torch Conv3d. Ratios come from
the same run, with the XLA:CPU mode that JAXSEG_XLA_CPU picks (jaxseg/xla_cpu.py).
"""

import argparse
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import xla_cpu
xla_cpu.configure()  # jaxseg's XLA:CPU mode, before JAX starts its backend

from jaxseg.models import convolution
from jaxseg.models import sampling
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# (input shape NHWC) at each level of a features-16, depth-4 U-Net on 128x128.
LEVELS = ((16, 128, 128, 16), (16, 64, 64, 32), (16, 32, 32, 64),
          (16, 16, 16, 128))
# (input shape NDHWC) of 3D U-Net levels: batch 2 of 64^3 and 32^3 patches.
VOLUMES = ((2, 64, 64, 64, 8), (2, 32, 32, 32, 16), (2, 16, 16, 16, 64))


def _median_ms(fn, repeats):
  return 1000 * median_time(fn, repeats)


def _jax_ms(loss, args, repeats):
  grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
  return _median_ms(lambda: jax.block_until_ready(grad(*args)), repeats)


def _torch_ms(layer, x, repeats):
  import torch
  channels_first = (0, x.ndim - 1) + tuple(range(1, x.ndim - 1))
  xt = torch.from_numpy(np.asarray(x).transpose(channels_first).copy())
  xt.requires_grad_()
  params = list(layer.parameters()) if hasattr(layer, 'parameters') else []

  def step():
    loss = (layer(xt) ** 2).sum()
    torch.autograd.grad(loss, [xt] + params)
  return _median_ms(step, repeats)


def cases(use_torch):
  """(name, shape, flax loss+args, jaxseg loss+args, torch layer or None)."""
  rng = np.random.default_rng(0)
  if use_torch:
    import torch
    torch.manual_seed(0)
  for shape in LEVELS:
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    c = shape[-1]
    tmod = None
    if use_torch:
      tmod = lambda t: torch.nn.functional.max_pool2d(t, 2)  # noqa: E731
    yield ('max-pool 2x2/2', shape,
           (lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2), (x,)),
           (lambda x: jnp.sum(sampling.max_pool(x, 2) ** 2), (x,)), tmod)
    xs = x[:, ::2, ::2, :]  # the up-sampling input: half size, 2c -> c
    xs = jnp.concatenate([xs, xs], axis=-1)
    for k, pad, tpad in ((2, 'VALID', (0, 0)), (3, 'SAME', (1, 1))):
      flax_layer = nn.ConvTranspose(c, (k, k), strides=(2, 2), padding=pad)
      ours = sampling.ConvTranspose(c, (k, k), strides=(2, 2), padding=pad)
      v = flax_layer.init(jax.random.key(0), xs)
      if use_torch:
        tmod = torch.nn.ConvTranspose2d(2 * c, c, k, stride=2, padding=tpad[0],
                                        output_padding=1 if k == 3 else 0)
      yield (f'conv-transpose {k}x{k}/2 {2 * c}->{c}', xs.shape,
             (lambda v, x, m=flax_layer: jnp.sum(m.apply(v, x) ** 2), (v, xs)),
             (lambda v, x, m=ours: jnp.sum(m.apply(v, x) ** 2), (v, xs)), tmod)
    gn = nn.GroupNorm(num_groups=None, group_size=8)
    v = gn.init(jax.random.key(0), x)
    if use_torch:
      tgn = torch.nn.GroupNorm(c // 8, c)
      tmod = lambda t, m=tgn: torch.relu(m(t))  # noqa: E731
      tmod.parameters = tgn.parameters
    loss = (lambda v, x: jnp.sum(jax.nn.relu(gn.apply(v, x)) ** 2), (v, x))
    yield ('group-norm + ReLU', shape, loss, None, tmod)
  for shape in VOLUMES:
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    c = shape[-1]
    flax_layer = nn.Conv(c, (3, 3, 3), padding='SAME', use_bias=False)
    ours = convolution.Conv(c, (3, 3, 3), padding='SAME', use_bias=False)
    v = flax_layer.init(jax.random.key(0), x)
    tmod = None
    if use_torch:
      tmod = torch.nn.Conv3d(c, c, 3, padding=1, bias=False)
    yield (f'conv 3x3x3 {c}->{c}', shape,
           (lambda v, x, m=flax_layer: jnp.sum(m.apply(v, x) ** 2), (v, x)),
           (lambda v, x, m=ours: jnp.sum(m.apply(v, x) ** 2), (v, x)), tmod)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--no-torch', action='store_true')
  args = parser.parse_args(argv)
  use_torch = not args.no_torch
  if use_torch:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
  print(f'jax {jax.__version__}, {os.cpu_count()} CPU cores, XLA_FLAGS='
        f'{os.environ.get("XLA_FLAGS", "")!r}; median of {args.repeats}, ms')
  print('| layer | input | flax | jaxseg | torch | flax/jaxseg | jaxseg/torch time |')
  print('|---|---|---|---|---|---|---|')
  for name, shape, flax_case, ours_case, tmod in cases(use_torch):
    flax_ms = _jax_ms(*flax_case, args.repeats)
    ours_ms = _jax_ms(*ours_case, args.repeats) if ours_case else flax_ms
    x = flax_case[1][-1]  # the layer's input
    torch_ms = _torch_ms(tmod, x, args.repeats) if tmod else float('nan')
    print(f'| {name} | {"x".join(map(str, shape))} | {flax_ms:.0f} | '
          f'{ours_ms:.0f} | {torch_ms:.0f} | {flax_ms / ours_ms:.2f}x | '
          f'{ours_ms / torch_ms:.2f} |', flush=True)


if __name__ == '__main__':
  main()
