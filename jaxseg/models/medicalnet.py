"""MedicalNet ("Med3D", Tencent/MedicalNet) .pth files -> ResNet3D variables.

The released files (resnet_10.pth, resnet_18.pth, ...) hold
{'state_dict': {...}} saved from nn.DataParallel, so every key starts with
'module.'. Keys map 1:1 to the paths of `jaxseg.models.med3d.ResNet3D`:

    module.layer2.0.downsample.0.weight (O, I, D, H, W)
        -> params/layer2_0/downsample_0/kernel (D, H, W, I, O)
    module.bn1.weight / bias            -> params/bn1/scale / bias
    module.bn1.running_mean / var       -> batch_stats/bn1/mean / var

`num_batches_tracked` and the segmentation head (`conv_seg.*`) are dropped.
torch is only needed here (an optional dependency).
"""

import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxseg.errors import InputError
from jaxseg.models.med3d import DEPTHS, ResNet3D, resolve

_PARAM_NAMES = {'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}
_TORCH_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                'mean': 'running_mean', 'var': 'running_var'}
_LAYER_KEY = re.compile(r'^layer([1-4])\.(\d+)\.')


def torch_key_to_path(key: str, ndim: int) -> Tuple[str, ...]:
  """'layer1.0.bn1.running_var' -> ('batch_stats', 'layer1_0', 'bn1', 'var').

  `ndim` is the tensor's rank: a 'weight' of rank > 1 is a conv kernel, of
  rank 1 a norm scale.
  """
  parts = []
  for part in key.split('.')[:-1]:
    if part.isdigit() and parts:
      parts[-1] = f'{parts[-1]}_{part}'
    else:
      parts.append(part)
  leaf = key.split('.')[-1]
  if leaf == 'weight':
    name = 'kernel' if ndim > 1 else 'scale'
  else:
    name = _PARAM_NAMES.get(leaf, leaf)
  collection = 'batch_stats' if leaf.startswith('running_') else 'params'
  return (collection, *parts, name)


def path_to_torch_key(path: Tuple[str, ...]) -> str:
  """The inverse of torch_key_to_path.

  ('params', 'layer1_0', 'downsample_0', 'kernel')
    -> 'layer1.0.downsample.0.weight'.
  """
  parts = [re.sub(r'_(\d+)$', r'.\1', p) for p in path[1:-1]]
  return '.'.join(parts + [_TORCH_NAMES.get(path[-1], path[-1])])


def _torch_to_flax(value: np.ndarray) -> np.ndarray:
  """Conv weight (O, I, *K) -> (*K, I, O); vectors unchanged."""
  if value.ndim > 1:
    value = np.transpose(value, (*range(2, value.ndim), 1, 0))
  return np.ascontiguousarray(value, dtype=np.float32)


def infer_depth(keys, where: str = 'state_dict') -> int:
  """A MedicalNet backbone's depth from its key names (blocks per layer)."""
  blocks = [set() for _ in range(4)]
  for key in keys:
    match = _LAYER_KEY.match(key)
    if match:
      blocks[int(match.group(1)) - 1].add(int(match.group(2)))
  counts = tuple(len(b) for b in blocks)
  kind = 'bottleneck' if any('.conv3.' in k for k in keys) else 'basic'
  for depth, layout in DEPTHS.items():
    if layout == (kind, counts):
      return depth
  raise InputError(where, f'is not a MedicalNet 3D ResNet: {kind} blocks per '
                   f'layer {counts} match no depth '
                   f'({", ".join(map(str, DEPTHS))})')


def infer_shortcut(keys) -> str:
  """'B' if the blocks have downsample convs, else 'A' (no parameters)."""
  return 'B' if any('.downsample.' in k for k in keys) else 'A'


def expected_shapes(depth: int,
                    shortcut_type: str) -> Dict[Tuple[str, ...], tuple]:
  """{(collection, *path): shape} of ResNet3D(depth, shortcut_type)."""
  model = ResNet3D(depth=depth, shortcut_type=shortcut_type)
  x = jnp.zeros((1, 8, 8, 8, 1), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False))
  flat = traverse_util.flatten_dict(jax.tree.map(lambda s: s.shape, shapes))
  return {k: tuple(v) for k, v in flat.items()}


def _first_line(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  return lines[0][:200] if lines else 'no details'


def _list(keys, limit: int = 4) -> str:
  keys = sorted(keys)
  more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
  return ', '.join(keys[:limit]) + more


def convert_state_dict(state_dict: Mapping[str, Any],
                       depth: Optional[int] = None,
                       shortcut_type: Optional[str] = None,
                       where: str = 'state_dict') -> Dict[str, Any]:
  """A MedicalNet state dict (arrays or tensors) -> ResNet3D variables.

  Args:
    state_dict: key -> tensor/array; 'module.' prefixes, the 'conv_seg' head
      and 'num_batches_tracked' entries are allowed and dropped.
    depth: the expected depth; None: inferred from the keys.
    shortcut_type: the expected shortcut ('A'/'B'); None: inferred from the
      keys (downsample convs present: 'B').
    where: the file name for error messages.

  Returns:
    {'params': ..., 'batch_stats': ...} for `ResNet3D(depth, shortcut_type)`
    (float32 jax arrays).

  Raises:
    InputError: a missing or unexpected backbone key, or a shape mismatch.
  """
  arrays = {}
  for key, value in state_dict.items():
    key = str(key)
    if key.startswith('module.'):
      key = key[len('module.'):]
    if key.startswith('conv_seg.') or key.endswith('num_batches_tracked'):
      continue
    if hasattr(value, 'detach'):
      value = value.detach().cpu().float().numpy()
    try:
      arrays[key] = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
      raise InputError(where, f'entry {key!r} is not a tensor '
                       f'({type(value).__name__})') from e
  if not arrays:
    raise InputError(where, 'holds no MedicalNet backbone weights '
                     '(no keys besides conv_seg)')
  if depth is None:
    depth = infer_depth(arrays, where)
  if shortcut_type is None:
    shortcut_type = infer_shortcut(arrays)
  try:
    resolve(depth, shortcut_type)
  except ValueError as e:
    raise InputError(where, str(e)) from e
  want = expected_shapes(depth, shortcut_type)
  got = {torch_key_to_path(k, v.ndim): (k, v) for k, v in arrays.items()}
  name = f'resnet{depth} (shortcut {shortcut_type})'
  missing = [path_to_torch_key(p) for p in want if p not in got]
  unexpected = [k for p, (k, _) in got.items() if p not in want]
  if missing or unexpected:
    problems = []
    if missing:
      problems.append(f'missing {_list(missing)}')
    if unexpected:
      problems.append(f'unexpected {_list(unexpected)}')
    raise InputError(where, f'does not match a MedicalNet {name} backbone: '
                     + '; '.join(problems))
  flat = {}
  for path, shape in want.items():
    key, value = got[path]
    value = _torch_to_flax(value)
    if value.shape != shape:
      raise InputError(where, f'{key} has shape {tuple(arrays[key].shape)} '
                       f'(PyTorch layout); a MedicalNet {name} backbone needs '
                       f'{tuple(shape)} in Flax layout')
    flat[path] = jnp.asarray(value)
  variables = traverse_util.unflatten_dict(flat)
  variables.setdefault('batch_stats', {})
  return variables


def load_medicalnet(path, depth: Optional[int] = None,
                    shortcut_type: Optional[str] = None) -> Dict[str, Any]:
  """Reads a MedicalNet .pth into {'params', 'batch_stats'} of ResNet3D.

  The result fills the 'backbone' subtree of Med3DUNet (or a bare ResNet3D).

  Args:
    path: a MedicalNet checkpoint ({'state_dict': ...} or a bare state
      dict; DataParallel 'module.' prefixes are stripped).
    depth: expected depth (10, 18, 34, 50, ...); None: read from the keys.
    shortcut_type: expected shortcut type; None: read from the keys.

  Raises:
    InputError(path, problem): torch missing, a missing or unreadable file,
      or weights that are not a MedicalNet backbone of that depth.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise InputError(path, 'reading MedicalNet checkpoints needs PyTorch: '
                     'pip install torch') from e
  if not os.path.isfile(path):
    raise InputError(path, 'no such file (a MedicalNet checkpoint, e.g. '
                     'pretrain/resnet_10.pth)')
  try:
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(path, 'cannot be read as a PyTorch weights checkpoint '
                     f'({type(e).__name__}: {_first_line(e)})'
                     ) from e
  if isinstance(checkpoint, Mapping) and 'state_dict' in checkpoint:
    checkpoint = checkpoint['state_dict']
  if not isinstance(checkpoint, Mapping):
    raise InputError(path, 'holds a '
                     f'{type(checkpoint).__name__}, not a state dict')
  return convert_state_dict(checkpoint, depth, shortcut_type, where=path)
