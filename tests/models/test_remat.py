"""Per-stage rematerialisation (`remat=True`) and bf16 computation of the
U-Nets: unet3d, residual_unet3d, dilated_unet3d, med3d_unet and resunet.

remat: the remat model must be the same function with the same parameters.
Each model is built twice (remat off / on) and both runs are compared on
one set of variables: the parameter trees (paths, shapes, dtypes), the
logits and updated batch statistics in train mode (dropout on, same key)
and eval mode, and the gradients of a sigmoid BCE loss in both modes.

What remat buys is fewer activations kept for the backward pass. That is
measured on the autodiff program itself: the residuals `jax.vjp` keeps
(its closure, evaluated abstractly) for a batch of 2 minus those for a
batch of 1, i.e. the per-sample saved activations, parameters excluded.
The compiled program's temp bytes (`memory_analysis()`) are compared only
on accelerators: XLA:CPU drops the optimisation barriers that jax.remat
puts around the recomputation (none is left in the optimised HLO) and CSE
merges the recomputed forward back into the forward pass, so on CPU remat
saves no compiled memory (measured: a UNet 2D, 4x128x128x2, features 8,
depth 2: 52,989,160 bytes off, 52,989,416 on).

bf16: with `dtype=jnp.bfloat16` the parameters, logits and gradients stay
float32, every convolution of the forward and backward pass runs on bf16
operands (checked in the jaxpr), and the logits stay close to float32's.

Programs are compiled with `xla_backend_optimization_level=0` (3-4x faster
to compile on CPU). The remat comparison of dilated_unet3d and med3d_unet
is marked slow (~40 s together); the rest runs in ~55 s on 2 cores.
"""

import functools
import math

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.models.layers import MC_DROPOUT
from jaxseg.models.med3d import Med3DUNet
from jaxseg.models.resunet import ResUNet
from jaxseg.models.unet import UNet, UNet3D
from jaxseg.models.unet3d import DilatedUNet3D, ResidualUNet3D

import model_checks as mc

# name -> (module class, small fields, input shape). Dropout is on in every
# model so that the dropout RNG paths under remat are compared too.
CASES = {
    'unet3d': (UNet3D, dict(features=4, dropout_rate=0.1), (1, 16, 16, 16, 2)),
    'residual_unet3d': (ResidualUNet3D, dict(
        features=(4, 8), num_stage_maps=1, dropout_rate=0.1),
        (1, 16, 16, 16, 2)),
    'dilated_unet3d': (DilatedUNet3D, dict(
        width=4, dropout_rate=0.1, deep_supervision=True), (1, 8, 8, 8, 2)),
    'med3d_unet': (Med3DUNet, dict(
        num_classes=2, features=(4, 4, 4, 4), dropout_rate=0.1),
        (1, 8, 8, 8, 1)),
    'resunet': (ResUNet, dict(widths=(4, 8), depths=(1, 1),
                              output_depth=1), (2, 16, 16, 2)),
}
# Compiling both gradients of these two takes ~10-15 s per model variant on
# a 2-core CPU: their remat comparison runs with the slow tests.
SLOW = ('dilated_unet3d', 'med3d_unet')

OUT_RTOL = OUT_ATOL = 1e-5
GRAD_RTOL = 1e-4       # of the largest |gradient| of each parameter array
BF16_REL_L2 = 3e-2     # ||bf16 - f32|| / ||f32|| of the logits
COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def _model(name, remat=False, dtype=jnp.float32):
  cls, fields, _ = CASES[name]
  return cls(**fields, remat=remat, dtype=dtype)


def _heads(out):
  return list(out) if isinstance(out, (list, tuple)) else [out]


def _bce(out, y):
  return sum(optax.sigmoid_binary_cross_entropy(h, y).mean()
             for h in _heads(out))


@functools.lru_cache(maxsize=None)
def _data(name):
  """(variables, x, y) for a case: random variables (model_checks), input,
  a fixed binary target of the logits' shape."""
  _, _, shape = CASES[name]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  model = _model(name)
  v = mc.variables(model, x)
  out = jax.eval_shape(functools.partial(model.apply, train=False), v, x)
  y = jnp.asarray(rng.random(_heads(out)[-1].shape) < 0.3, jnp.float32)
  return v, x, y


def _run(model, v, x, y):
  """Train-mode (dropout, batch stats) and eval-mode logits and gradients."""
  params = v['params']
  state = {k: w for k, w in v.items() if k != 'params'}

  def train_loss(p):
    out, new_state = model.apply(
        {'params': p, **state}, x, True, rngs={'dropout': jax.random.key(3)},
        mutable=list(state))
    return _bce(out, y), (out, new_state)

  def eval_loss(p):
    out = model.apply({'params': p, **state}, x, False)
    return _bce(out, y), out

  (_, (train_out, new_state)), train_grads = jax.value_and_grad(
      train_loss, has_aux=True)(params)
  (_, eval_out), eval_grads = jax.value_and_grad(eval_loss, has_aux=True)(
      params)
  return dict(train_out=train_out, new_state=new_state,
              train_grads=train_grads, eval_out=eval_out,
              eval_grads=eval_grads)


@functools.lru_cache(maxsize=None)
def _results(name, remat, dtype=jnp.float32):
  """_run compiled without XLA's backend optimisations (3-4x faster to
  compile on CPU; the same for both sides of every comparison)."""
  v, x, y = _data(name)
  run = jax.jit(functools.partial(_run, _model(name, remat, dtype)))
  compiled = run.lower(v, x, y).compile(COMPILER_OPTIONS)
  return compiled(v, x, y)


def _tree_signature(tree):
  return {jax.tree_util.keystr(k): (tuple(l.shape), l.dtype)
          for k, l in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_grads_close(got, want, rtol):
  want_flat = dict(jax.tree_util.tree_leaves_with_path(want))
  for path, g in jax.tree_util.tree_leaves_with_path(got):
    w = np.asarray(want_flat[path])
    scale = np.max(np.abs(w))
    err = np.max(np.abs(np.asarray(g) - w))
    assert err <= rtol * scale + 1e-12, (jax.tree_util.keystr(path), err, scale)


# ------------------------------------------------------------------ remat


@pytest.mark.parametrize('name', CASES)
def test_remat_keeps_the_parameter_tree(name):
  _, x, _ = _data(name)
  off = mc.init_shapes(_model(name, False), x)
  on = mc.init_shapes(_model(name, True), x)
  assert _tree_signature(on) == _tree_signature(off)
  assert set(off['params']) == set(on['params'])


def test_remat_backbone_still_matches_medicalnet_keys():
  """The pretrained loader's key map (medicalnet.expected_shapes) fits the
  remat model's backbone subtree."""
  from jaxseg.models import medicalnet
  from flax import traverse_util
  x = jnp.zeros((1, 8, 8, 8, 2))
  v = mc.init_shapes(Med3DUNet(depth=10, remat=True), x)
  got = {}
  for col in ('params', 'batch_stats'):
    flat = traverse_util.flatten_dict(v[col]['backbone'])
    got.update({(col, *k): tuple(s.shape) for k, s in flat.items()})
  assert got == medicalnet.expected_shapes(10, 'B')


@pytest.mark.slow
@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
    for n in CASES])
def test_remat_same_outputs_and_gradients(name):
  off, on = _results(name, False), _results(name, True)
  for key in ('train_out', 'eval_out'):
    for a, b in zip(_heads(on[key]), _heads(off[key]), strict=True):
      np.testing.assert_allclose(a, b, rtol=OUT_RTOL, atol=OUT_ATOL)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=OUT_RTOL,
                                 atol=OUT_ATOL), on['new_state'],
               off['new_state'])
  for key in ('train_grads', 'eval_grads'):
    _assert_grads_close(on[key], off[key], GRAD_RTOL)


def test_remat_dropout_is_live():
  """The train-mode comparison above is not vacuous: unet3d has no norm, so
  its train and eval outputs differ by dropout alone."""
  out = _results('unet3d', True)
  diff = np.asarray(out['train_out']) - np.asarray(out['eval_out'])
  assert np.max(np.abs(diff)) > 1e-3


def test_remat_keeps_mc_dropout():
  """Monte-Carlo dropout (inference mode, 'mc_dropout' RNG) samples the same
  masks with remat as without, and different keys give different masks."""
  v, x, _ = _data('resunet')
  outs = {}
  for remat in (False, True):
    model = _model('resunet', remat)
    apply = jax.jit(lambda v, x, key, model=model: model.apply(
        v, x, False, rngs={MC_DROPOUT: key}))
    outs[remat] = [np.asarray(apply(v, x, jax.random.key(k))) for k in (1, 2)]
  np.testing.assert_allclose(outs[True][0], outs[False][0], rtol=OUT_RTOL,
                             atol=OUT_ATOL)
  assert np.max(np.abs(outs[True][0] - outs[True][1])) > 1e-3


def _residual_bytes(model, x, v):
  """Bytes of the values jax.vjp keeps for the backward pass of a BCE loss
  in train mode (abstract evaluation, nothing runs)."""
  def vjp_fn(params, state, x):
    def loss(p):
      out, _ = model.apply({'params': p, **state}, x, True,
                           rngs={'dropout': jax.random.key(0)},
                           mutable=list(state))
      return sum(h.mean() for h in _heads(out))
    return jax.vjp(loss, params)[1]

  state = {k: w for k, w in v.items() if k != 'params'}
  closure = jax.eval_shape(vjp_fn, v['params'], state, x)
  return sum(math.prod(l.shape) * l.dtype.itemsize
             for l in jax.tree.leaves(closure))


def _activation_bytes(model, shape):
  """Saved activations per sample: residuals at batch 2 minus batch 1."""
  sizes = []
  for n in (1, 2):
    x = jax.ShapeDtypeStruct((n, *shape[1:]), jnp.float32)
    sizes.append(_residual_bytes(model, x, mc.init_shapes(model, x)))
  return sizes[1] - sizes[0]


@pytest.mark.slow
@pytest.mark.parametrize('name', CASES)
def test_remat_saves_fewer_activations(name):
  shape = CASES[name][2]
  off = _activation_bytes(_model(name, False), shape)
  on = _activation_bytes(_model(name, True), shape)
  assert off > 0 and on < 0.75 * off, (on, off)


def test_remat_lowers_compiled_temp_memory():
  if jax.default_backend() == 'cpu':
    pytest.skip('XLA:CPU removes the optimisation barriers of jax.remat and '
                'CSE folds the recomputation back into the forward pass, so '
                'the compiled temp size does not drop on CPU (module '
                'docstring); checked on GPU/TPU backends only')
  x = jnp.zeros((4, 128, 128, 2))
  temps = []
  for remat in (False, True):
    model = UNet(features=8, depth=2, remat=remat)
    v = mc.init_shapes(model, x)
    state = {k: w for k, w in v.items() if k != 'params'}

    def loss(p, s, x, model=model):
      out, _ = model.apply({'params': p, **s}, x, True, mutable=list(s))
      return out.mean()

    compiled = jax.jit(jax.grad(loss)).lower(v['params'], state, x).compile()
    temps.append(compiled.memory_analysis().temp_size_in_bytes)
  assert temps[1] < 0.9 * temps[0], temps


# ------------------------------------------------------------------- bf16


def _conv_operand_dtypes(jaxpr):
  """Operand dtypes of every conv_general_dilated, nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, jcore.ClosedJaxpr):
          found += _conv_operand_dtypes(sub.jaxpr)
        elif isinstance(sub, jcore.Jaxpr):
          found += _conv_operand_dtypes(sub)
  return found


def _eval_logits(name, dtype):
  v, x, _ = _data(name)
  apply = jax.jit(functools.partial(_model(name, dtype=dtype).apply,
                                    train=False))
  return apply.lower(v, x).compile(COMPILER_OPTIONS)(v, x)


@functools.lru_cache(maxsize=None)
def _bf16_trace(name):
  """(jaxpr, output shapes) of _run for the bf16 model (traced, not run)."""
  v, x, y = _data(name)
  model = _model(name, dtype=jnp.bfloat16)
  return jax.make_jaxpr(functools.partial(_run, model), return_shape=True)(
      v, x, y)


@pytest.mark.slow
@pytest.mark.parametrize('name', CASES)
def test_bf16_keeps_float32_variables_logits_and_gradients(name):
  v, x, _ = _data(name)
  shapes = mc.init_shapes(_model(name, dtype=jnp.bfloat16), x)
  assert _tree_signature(shapes) == _tree_signature(v)  # all float32
  _, out = _bf16_trace(name)
  for key in ('train_out', 'eval_out', 'train_grads', 'eval_grads'):
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(out[key])}
    assert dtypes == {jnp.dtype(jnp.float32)}, (key, dtypes)


@pytest.mark.parametrize('name', CASES)
def test_bf16_convolutions_run_in_bf16(name):
  """Forward and backward convs all take bf16 operands (no layer hands the
  next conv float32 that would silently promote it)."""
  jaxpr, _ = _bf16_trace(name)
  dtypes = _conv_operand_dtypes(jaxpr.jaxpr)
  assert dtypes and all(d == ('bfloat16', 'bfloat16') for d in dtypes), (
      sorted(set(dtypes)))


@pytest.mark.slow
@pytest.mark.parametrize('name', CASES)
def test_bf16_logits_close_to_float32(name):
  """Eval-mode logits of the bf16 model vs the float32 model, same
  variables: relative L2 error below BF16_REL_L2 (and not 0: bf16 ran)."""
  v, x, _ = _data(name)
  a, b = (np.asarray(_eval_logits(name, dtype), np.float64)
          for dtype in (jnp.bfloat16, jnp.float32))
  rel = np.linalg.norm(a - b) / np.linalg.norm(b)
  assert 0 < rel < BF16_REL_L2, rel


def test_conv_dtype_probe_sees_float32():
  """The probe above can fail: a float32 model's convs are reported."""
  v, x, y = _data('unet3d')
  jaxpr = jax.make_jaxpr(functools.partial(_run, _model('unet3d')))(v, x, y)
  assert set(_conv_operand_dtypes(jaxpr.jaxpr)) == {('float32', 'float32')}


@pytest.mark.slow
def test_remat_wraps_blocks_in_checkpoint():
  """remat=True puts the stages under jax.checkpoint (a 'remat2' equation in
  the gradient's jaxpr); remat=False has none."""
  v, x, y = _data('unet3d')

  def names(jaxpr, acc):
    for eqn in jaxpr.eqns:
      acc.add(eqn.primitive.name)
      for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else [param]:
          if isinstance(sub, jcore.ClosedJaxpr):
            names(sub.jaxpr, acc)
          elif isinstance(sub, jcore.Jaxpr):
            names(sub, acc)
    return acc

  found = {}
  for remat in (False, True):
    jaxpr = jax.make_jaxpr(functools.partial(_run, _model('unet3d', remat)))(
        v, x, y)
    found[remat] = {n for n in names(jaxpr.jaxpr, set())
                    if 'remat' in n or 'checkpoint' in n}
  assert not found[False] and found[True]

