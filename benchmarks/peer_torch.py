"""jaxseg against PyTorch: the same architectures, machine, batch and input size.

    python benchmarks/peer_torch.py                # the study sizes
    python benchmarks/peer_torch.py --quick        # small batches and inputs
    python benchmarks/peer_torch.py --cases=unet16_group --steps=7

Each case builds a jaxseg model from a study config (with the overrides
listed in CASES) and a faithful PyTorch port of it, asserts that both have
the same number of trainable parameters, and times in the same run:

  train     one training step: forward, backward, Adam update, on a BCE-with-
            logits loss. jaxseg: `step_lib.train_step` jitted as loop.py jits
            it (so it also computes the step's metrics); PyTorch: eager,
            zero_grad / loss.backward() / optimizer.step().
  infer     forward only, inference mode (jitted `apply(train=False)`;
            torch `model.eval()` under `torch.inference_mode()`).

Medians of `--steps` (>= 5) timed calls after `--warmup` calls, jaxseg's
and PyTorch's calls interleaved (one of each per round, after a 50 ms
pause), so that the load of a shared machine falls on both alike; `ratio`
is PyTorch's time / jaxseg's, i.e. jaxseg's speed as a multiple of
PyTorch's (above 1: jaxseg is faster). Threads: PyTorch runs with
torch.set_num_threads(the cores this process may use) intra-op threads;
XLA:CPU's intra-op pool has one thread per core too (its default), so both
use every core and neither more. NCHW tensors for PyTorch (its default),
XLA with jaxseg's CPU settings (jaxseg/xla_cpu.py,
`jaxseg.xla_cpu.configure()`), convolutions on oneDNN where the extension is
built (jaxseg.models.ops). `--precisions`: float32 on both sides, and
bfloat16: jaxseg's train.precision=bfloat16 (bf16 computation, float32
parameters and logits) against the same PyTorch model under
torch.autocast('cpu', torch.bfloat16); a last line gives jaxseg's bf16
step as a multiple of its float32 step per case. The load average before and after each case is printed: numbers
taken above ~1.5 on a 2-core machine say more about the neighbours than
about either library. PyTorch is not a jaxseg dependency: it is imported
here only, and the script exits with a message when it is missing.

Ports: 'unet' is mateuszbuda/brain-segmentation-pytorch's UNet (seed 003),
generalised to jaxseg's `norm`, `activation`, `upsampling` and `depth`
fields; 'resunet' is seed 002's ResU-Net (jaxseg/models/resunet.py's
docstring: Keras layer LayerNorm over channels, ConvTranspose(3, stride 2,
'same')); 'unet3d' is seed 000's plain 3D U-Net (ELU, no norm, nearest
upsampling + Conv(2)).
"""

import argparse
import functools
import itertools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import xla_cpu
xla_cpu.configure()  # jaxseg's XLA:CPU mode, before JAX starts its backend

from jaxseg import config_base
import timing  # noqa: E402  (benchmarks/timing.py)
from jaxseg import losses
from jaxseg import onednn
from jaxseg.models import shapes
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib

# name -> (config file, model overrides, (batch, *spatial, C) full,
#          (batch, *spatial, C) --quick, note)
CASES = {
    'unet16_group': (
        'lgg_unet', dict(features=16, depth=4, norm='group'),
        (16, 128, 128, 4), (16, 128, 128, 4),
        "issue 7's reference case (1.9M parameters, GroupNorm)"),
    'unet_seed003': (
        'lgg_unet', {}, (16, 256, 256, 3), (4, 128, 128, 3),
        'seed 003 U-Net (buda), 7,763,041 parameters'),
    'resunet_seed002': (
        'brats19_resunet', {}, (64, 64, 64, 4), (16, 64, 64, 4),
        'seed 002 ResU-Net, 6,854,609 parameters'),
    'unet3d_seed000': (
        'brats15_unet3d', {}, (8, 96, 96, 96, 1), (2, 32, 32, 32, 1),
        'seed 000 plain 3D U-Net'),
}


# ------------------------------------------------------------------ jaxseg


def jax_case(config, shape) -> dict:
  """jaxseg's train step and inference calls, and its parameter count
  (`config.train.precision` as the trainer takes it)."""
  model = models.from_config(config)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  y = jnp.asarray(rng.random(shape[:-1] + (1,)) < 0.2, jnp.float32)
  batch = dict(image=x, target=y, weight=jnp.ones(shape[0], jnp.float32))
  variables = shapes.random_variables(model, x[:1])
  state = state_lib.TrainState.create(
      apply_fn=model.apply, params=variables['params'], tx=optax.adam(1e-4),
      batch_stats=variables.get('batch_stats', {}))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build({'name': 'bce'}),
      activation='sigmoid'), donate_argnums=0)
  key = jax.random.key(0)
  holder = [state]

  def train_once():
    holder[0], _ = step(holder[0], batch, key)
    jax.block_until_ready(holder[0])

  infer = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def infer_once():
    variables = {'params': holder[0].params,
                 'batch_stats': holder[0].batch_stats}
    jax.block_until_ready(infer(variables, x))

  return dict(params=shapes.count(variables['params']), train=train_once,
              infer=infer_once)


# ----------------------------------------------------------------- PyTorch


def torch_modules():
  """The PyTorch ports (defined here so that torch is imported lazily)."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  def conv_cls(nd):
    return {2: nn.Conv2d, 3: nn.Conv3d}[nd]

  def convt_cls(nd):
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]

  class ChannelLayerNorm(nn.Module):
    """Keras LayerNormalization(axis=-1) on NC... tensors: over C only."""

    def __init__(self, channels, eps):
      super().__init__()
      self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x):
      return self.norm(x.movedim(1, -1)).movedim(-1, 1)

  def make_norm(kind, channels, nd, eps=1e-5, momentum=0.1):
    if kind == 'batch':
      return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[nd](
          channels, eps=eps, momentum=momentum)
    if kind == 'group':  # jaxseg: groups of 8 channels
      return nn.GroupNorm(channels // min(8, channels), channels, eps=eps)
    if kind == 'instance':
      return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[nd](
          channels, eps=eps, affine=True)
    if kind == 'layer':
      return ChannelLayerNorm(channels, eps)
    if kind == 'none':
      return nn.Identity()
    raise ValueError(kind)

  def make_act(kind):
    return {'relu': nn.ReLU, 'elu': nn.ELU, 'silu': nn.SiLU,
            'leaky_relu': lambda: nn.LeakyReLU(0.01)}[kind]()

  class UNetBlock(nn.Sequential):
    """[Conv(k) -> norm -> act] x 2 (buda's `_block`)."""

    def __init__(self, cin, cout, nd, k, norm, act, bias):
      layers = []
      for c in (cin, cout):
        layers += [conv_cls(nd)(c, cout, k, padding=k // 2, bias=bias),
                   make_norm(norm, cout, nd), make_act(act)]
      super().__init__(*layers)

  class UNet(nn.Module):
    """buda's UNet with jaxseg `unet`'s fields (depth, norm, upsampling...)."""

    def __init__(self, cin, num_classes, nd, features=32, depth=4, kernel=3,
                 norm='batch', act='relu', conv_bias=None,
                 upsampling='transpose', up_conv_kernel=2):
      super().__init__()
      bias = norm == 'none' if conv_bias is None else conv_bias
      self.nd, self.upsampling = nd, upsampling
      width = lambda i: features * 2 ** i  # noqa: E731
      self.encoders = nn.ModuleList(
          UNetBlock(cin if i == 0 else width(i - 1), width(i), nd, kernel,
                    norm, act, bias) for i in range(depth))
      self.bottleneck = UNetBlock(width(depth - 1) if depth else cin,
                                  width(depth), nd, kernel, norm, act, bias)
      self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
      for i in reversed(range(depth)):
        if upsampling == 'transpose':
          up = convt_cls(nd)(width(i + 1), width(i), 2, stride=2)
          cat = 2 * width(i)
        elif up_conv_kernel > 0:
          up = nn.Sequential(
              conv_cls(nd)(width(i + 1), width(i), up_conv_kernel,
                           padding='same'), make_act(act))
          cat = 2 * width(i)
        else:
          up, cat = nn.Identity(), width(i + 1) + width(i)
        self.ups.append(up)
        self.decoders.append(UNetBlock(cat, width(i), nd, kernel, norm, act,
                                       bias))
      self.head = conv_cls(nd)(features, num_classes, 1)

    def forward(self, x):
      skips = []
      for enc in self.encoders:
        x = enc(x)
        skips.append(x)
        x = F.max_pool2d(x, 2) if self.nd == 2 else F.max_pool3d(x, 2)
      x = self.bottleneck(x)
      for up, dec in zip(self.ups, self.decoders):
        if self.upsampling != 'transpose':
          mode = 'nearest' if self.upsampling == 'nearest' else (
              'bilinear' if self.nd == 2 else 'trilinear')
          x = F.interpolate(x, scale_factor=2, mode=mode)
        x = dec(torch.cat([up(x), skips.pop()], dim=1))
      return self.head(x)

  class ResidualUnit(nn.Module):
    def __init__(self, cin, cout, nd, project, norm):
      super().__init__()
      conv = conv_cls(nd)
      self.conv1 = conv(cin, cout, 3, padding=1, bias=False)
      self.norm1 = make_norm(norm, cout, nd, eps=1e-3)
      self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
      self.norm2 = make_norm(norm, cout, nd, eps=1e-3)
      self.proj = (nn.Sequential(conv(cin, cout, 1, bias=False),
                                 make_norm(norm, cout, nd, eps=1e-3))
                   if project else nn.Identity())

    def forward(self, x):
      y = F.relu(self.norm1(self.conv1(x)))
      y = self.norm2(self.conv2(y))
      return F.relu(y + self.proj(x))

  class ResidualStage(nn.Sequential):
    def __init__(self, cin, cout, depth, nd, rate, norm):
      layers = []
      for i in range(depth):
        layers.append(ResidualUnit(cin if i == 0 else cout, cout, nd, i == 0,
                                   norm))
        if rate > 0:
          layers.append({2: nn.Dropout2d, 3: nn.Dropout3d}[nd](rate))
      super().__init__(*layers)

  class ResUNet(nn.Module):
    """Seed 002's ResU-Net (jaxseg/models/resunet.py)."""

    def __init__(self, cin, num_classes, nd, widths, depths, decoder_widths,
                 decoder_depths, output_depth, dropout_rate, norm='batch',
                 merge_norm='layer'):
      super().__init__()
      self.nd = nd
      self.encoders = nn.ModuleList()
      c = cin
      for w, d in zip(widths, depths):
        self.encoders.append(ResidualStage(c, w, d, nd, dropout_rate, norm))
        c = w
      skips = list(widths[:-1])
      self.ups, self.merges, self.decoders = (nn.ModuleList(), nn.ModuleList(),
                                              nn.ModuleList())
      for w, d in zip(decoder_widths, decoder_depths):
        self.ups.append(convt_cls(nd)(c, w, 3, stride=2, padding=1,
                                      output_padding=1))
        cat = w + skips.pop()
        self.merges.append(nn.Sequential(
            make_norm(merge_norm, cat, nd, eps=1e-3),
            {2: nn.Dropout2d, 3: nn.Dropout3d}[nd](dropout_rate)))
        self.decoders.append(ResidualStage(cat, w, d, nd, dropout_rate, norm))
        c = w
      self.out_conv = conv_cls(nd)(c, widths[0], 1)
      self.out_norm = make_norm(merge_norm, widths[0], nd, eps=1e-3)
      self.output = ResidualStage(widths[0], widths[0], output_depth, nd, 0.0,
                                  norm)
      self.head = conv_cls(nd)(widths[0], num_classes, 1)

    def forward(self, x):
      pool = F.max_pool2d if self.nd == 2 else F.max_pool3d
      skips = []
      for enc in self.encoders:
        x = pool(enc(x), 2)
        skips.append(x)
      x = skips.pop()
      for up, merge, dec in zip(self.ups, self.merges, self.decoders):
        x = dec(merge(torch.cat([F.relu(up(x)), skips.pop()], dim=1)))
      x = F.interpolate(x, scale_factor=2,
                        mode='bilinear' if self.nd == 2 else 'trilinear')
      x = self.out_norm(F.relu(self.out_conv(x)))
      return self.head(self.output(x))

  return UNet, ResUNet


def torch_model(config, channels: int, nd: int):
  """The PyTorch port of `config.model`."""
  UNet, ResUNet = torch_modules()
  m = models.from_config(config)  # the Flax module: its fields and defaults
  if config.model.name in ('unet', 'unet3d'):
    return UNet(channels, m.num_classes, nd, features=m.features,
                depth=m.depth, kernel=m.kernel_size, norm=m.norm,
                act=m.activation, conv_bias=m.conv_bias,
                upsampling=m.upsampling, up_conv_kernel=m.up_conv_kernel)
  if config.model.name == 'resunet':
    levels = len(m.widths)
    return ResUNet(channels, m.num_classes, nd, tuple(m.widths),
                   tuple(m.depths),
                   tuple(m.decoder_widths or m.widths[-2::-1]),
                   tuple(m.decoder_depths or (1,) * (levels - 1)),
                   m.output_depth, m.dropout_rate, m.norm, m.merge_norm)
  raise ValueError(f'no PyTorch port of {config.model.name!r}')


def torch_case(config, shape, precision: str = 'float32') -> dict:
  """PyTorch's train step and inference calls, and its parameter count;
  bfloat16 under CPU autocast."""
  import contextlib
  import torch
  autocast = (functools.partial(torch.autocast, 'cpu', dtype=torch.bfloat16)
              if precision == 'bfloat16' else contextlib.nullcontext)
  nd = len(shape) - 2
  model = torch_model(config, shape[-1], nd)
  rng = np.random.default_rng(0)
  # NCHW / NCDHW, PyTorch's native layout.
  x = torch.from_numpy(np.moveaxis(
      rng.normal(size=shape).astype(np.float32), -1, 1).copy())
  y = torch.from_numpy(np.moveaxis(
      (rng.random(shape[:-1] + (1,)) < 0.2).astype(np.float32), -1, 1).copy())
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  loss_fn = torch.nn.BCEWithLogitsLoss()
  model.train()

  def train_once():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      loss = loss_fn(model(x).float(), y)
    loss.backward()
    optimizer.step()

  def infer_once():
    model.eval()
    with torch.inference_mode(), autocast():
      model(x)

  params = sum(p.numel() for p in model.parameters() if p.requires_grad)
  return dict(params=params, train=train_once, infer=infer_once)


def case_config(name: str):
  file, overrides, *_ = CASES[name]
  config = config_base.load_config_file(os.path.join(REPO, 'configs',
                                                     f'{file}.py'))
  for key, value in overrides.items():
    config.model[key] = value
  config.data.label_mode = 'binary'  # one logit channel: BCE on both sides
  return config


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cases', default=','.join(CASES))
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--quick', action='store_true',
                      help='smaller batches and inputs (CASES\' quick sizes)')
  parser.add_argument('--clock', default='wall', choices=('wall', 'cpu'),
                      help="'cpu': process CPU time, a diagnostic for a busy "
                      "machine with the process pinned to one core "
                      "(taskset -c 0); see benchmarks/timing.py")
  parser.add_argument('--precisions', default='float32,bfloat16',
                      help='float32 and/or bfloat16 rows (see the docstring)')
  args = parser.parse_args(argv)
  if args.steps < 5:
    parser.error('--steps must be at least 5')
  try:
    import torch
  except ImportError:
    print('peer_torch: PyTorch is not installed (it is not a jaxseg '
          'dependency); `pip install torch` to run this benchmark.')
    return 0
  threads = len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else os.cpu_count()
  torch.set_num_threads(threads)
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}, '
        f'{len(jax.devices())} device(s)), torch {torch.__version__} '
        f'({threads} threads); median of {args.steps} after {args.warmup} '
        f'warm-up, interleaved; ratio = torch time / jaxseg time '
        f'({"quick" if args.quick else "full"} sizes); XLA_FLAGS='
        f'{os.environ.get("XLA_FLAGS", "")!r}, oneDNN convolutions: '
        f'{onednn.available()}, {args.clock} clock')
  print('| case | precision | model | input (N, ..., C) | batch | params (jax / torch) | '
        'train ms (jax, torch) | train ratio | infer ms (jax, torch) | '
        'infer ratio | load avg |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  train_ms = {}
  for name, precision in itertools.product(args.cases.split(','),
                                           args.precisions.split(',')):
    config = case_config(name)
    config.train.precision = precision
    shape = CASES[name][3] if args.quick else CASES[name][2]
    # Parameter parity first: a port that differs is not a peer.
    jax_params = shapes.count(shapes.variable_shapes(
        models.from_config(config),
        jax.ShapeDtypeStruct((1,) + shape[1:], jnp.float32))['params'])
    torch_params = sum(p.numel() for p in torch_model(
        config, shape[-1], len(shape) - 2).parameters())
    assert jax_params == torch_params, (name, jax_params, torch_params)
    load = timing.load_average()
    j = jax_case(config, shape)
    t = torch_case(config, shape, precision)
    times = {}
    for mode in ('train', 'infer'):
      m = timing.median_times({'jax': j[mode], 'torch': t[mode]}, args.steps,
                              args.warmup, pause=0.05, clock=args.clock)
      times[mode] = (m['jax'], m['torch'])
    (jt, tt), (ji, ti) = times['train'], times['infer']
    train_ms[name, precision] = jt * 1e3
    print(f'| {name} | {precision} | {config.model.name} | {"x".join(map(str, shape))} | '
          f'{shape[0]} | {j["params"]:,} / {t["params"]:,} | '
          f'{jt * 1e3:.1f}, {tt * 1e3:.1f} | {tt / jt:.2f} | '
          f'{ji * 1e3:.1f}, {ti * 1e3:.1f} | {ti / ji:.2f} | '
          f'{load:.1f}-{timing.load_average():.1f} |', flush=True)
  speedups = [f'{name} {train_ms[name, "float32"] / train_ms[name, "bfloat16"]:.2f}x'
              for name in args.cases.split(',')
              if (name, 'float32') in train_ms and (name, 'bfloat16') in train_ms]
  if speedups:
    print('jaxseg train step, bf16 speed over f32: ' + ', '.join(speedups))
  return 0


if __name__ == '__main__':
  sys.exit(main())
