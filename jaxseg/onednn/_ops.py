"""lax.conv_general_dilated on oneDNN's CPU kernels, through XLA's FFI.

The layers (outermost first) of one convolution `conv_general_dilated`:

  plan()              lax's arguments -> a `Spec` of oneDNN parameters, an
                      input crop (negative padding) and an output pad
                      (transposed convolutions padded beyond the kernel), or
                      `Unsupported`.
  custom_vjp          the gradient: backward-data and backward-weights calls
                      (oneDNN's primitives, not autodiff of the forward).
  custom_vmap         vmap: a batch axis of the activations alone is folded
                      into N (one call); batched weights run the kernel once
                      per batch element (lax.map).
  custom_partitioning sharding: each device calls the kernel on its own batch
                      shard (the batch axis is the only one that may stay
                      sharded); the weight gradient is psum'ed over the batch
                      axes. Shardy's rule: 'n' passes through, every other
                      factor needs replication.
  jax.ffi.ffi_call    the kernel (conv.cc), with the OpenMP thread count.
"""

import ctypes
import dataclasses
import functools
import math
import os
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseg.onednn import _loader

FWD, BWD_DATA, BWD_WEIGHTS = 0, 1, 2
PASSES = {'forward': FWD, 'input grad': BWD_DATA, 'weight grad': BWD_WEIGHTS}
_TARGETS = ('jaxseg_onednn_conv_fwd', 'jaxseg_onednn_conv_bwd_data',
            'jaxseg_onednn_conv_bwd_weights')
_DTYPE_CODES = {'float32': 0, 'bfloat16': 1}
THREADS_ENV = 'JAXSEG_ONEDNN_THREADS'
_SPECS = {2: ('NHWC', 'HWIO', 'NHWC'), 3: ('NDHWC', 'DHWIO', 'NDHWC')}


class Unsupported(NotImplementedError):
  """This convolution is not one the oneDNN kernel runs (the message says
  why); XLA's lax.conv_general_dilated computes it."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """One convolution in oneDNN's terms (static, hashable).

  Sizes are XLA's channels-last ones without N and the channels: the input's
  spatial sizes (after any crop), the kernel's, the output's (before any
  pad). strides, dilates (rhs dilation - 1), padding_l/r: oneDNN's
  (convolution or, if `transposed`, deconvolution with the kernel flipped).
  """
  transposed: bool
  in_spatial: tuple
  kernel: tuple
  out_spatial: tuple
  strides: tuple
  dilates: tuple
  padding_l: tuple
  padding_r: tuple
  in_dtype: str
  out_dtype: str

  @property
  def nd(self) -> int:
    return len(self.kernel)


def available() -> bool:
  """True where the oneDNN extension is loaded (Linux x86-64, built)."""
  return _loader.library() is not None


def unavailable_reason() -> Optional[str]:
  """Why `available()` is False (None where it is True)."""
  return _loader.state().get('reason')


def threads(num_devices: int = 1) -> int:
  """OpenMP threads per kernel call with `num_devices` devices of this
  process running at once: JAXSEG_ONEDNN_THREADS, else cores // devices
  (at least 1)."""
  env = os.environ.get(THREADS_ENV, '').strip()
  if env:
    return max(1, int(env))
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count() or 1
  return max(1, cores // max(1, num_devices))


# ---------------------------------------------------------------------------
# Planning: lax's arguments -> Spec.

def _ints(values, n: int, name: str) -> tuple:
  if values is None:
    return (1,) * n
  values = tuple(int(v) for v in values)
  if len(values) != n or any(v < 1 for v in values):
    raise Unsupported(f'{name}={values}')
  return values


@dataclasses.dataclass(frozen=True)
class Plan:
  spec: Spec
  crop: tuple      # (lo, hi) per spatial axis, cut from the input
  out_pad: tuple   # (lo, hi) per spatial axis, zeros added to the output


def plan(lhs, rhs, window_strides, padding, lhs_dilation=None,
         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
         preferred_element_type=None) -> Plan:
  """The oneDNN plan of a lax.conv_general_dilated call; raises Unsupported.

  Supported: 2D and 3D, channels-last activations and HWIO / DHWIO weights
  (NHWC/HWIO/NHWC, NDHWC/DHWIO/NDHWC dimension numbers), f32 or bf16 (both
  operands alike; bf16 where oneDNN implements it on this CPU; the output in
  the operands' type or f32 via preferred_element_type), any window strides,
  padding ('SAME', 'VALID', 'SAME_LOWER' or pairs, negative ones included),
  rhs dilation, and lhs dilation (transposed convolution) with unit window
  strides. Not: feature groups, other layouts or types, lhs dilation
  together with window strides, empty arrays, non-CPU backends.
  """
  if not available():
    raise Unsupported(unavailable_reason())
  if jax.default_backend() != 'cpu':
    raise Unsupported(f'backend {jax.default_backend()} is not the CPU')
  nd = lhs.ndim - 2
  if nd not in _SPECS or rhs.ndim != lhs.ndim:
    raise Unsupported(f'{nd}-d convolution (2D and 3D only)')
  if dimension_numbers is None:
    raise Unsupported('default (NCHW) dimension numbers: channels-last only')
  try:
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except (TypeError, ValueError) as e:
    raise Unsupported(f'dimension numbers {dimension_numbers}: {e}') from e
  if dn != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _SPECS[nd]):
    raise Unsupported(f'dimension numbers {dimension_numbers}: '
                      f'{"/".join(_SPECS[nd])} only')
  if feature_group_count != 1:
    raise Unsupported(f'feature_group_count={feature_group_count}')
  in_dtype = np.dtype(lhs.dtype).name
  if np.dtype(rhs.dtype).name != in_dtype or in_dtype not in _DTYPE_CODES:
    raise Unsupported(f'dtypes {lhs.dtype}, {rhs.dtype}: float32 or '
                      'bfloat16 alike')
  out_dtype = (in_dtype if preferred_element_type is None
               else np.dtype(preferred_element_type).name)
  if out_dtype not in (in_dtype, 'float32'):
    raise Unsupported(f'preferred_element_type={out_dtype}')
  if rhs.shape[-2] != lhs.shape[-1]:
    raise Unsupported(f'{lhs.shape[-1]} input channels, kernel {rhs.shape}')
  if 0 in lhs.shape or 0 in rhs.shape:
    raise Unsupported('empty array')
  strides = _ints(window_strides, nd, 'window_strides')
  lhs_dil = _ints(lhs_dilation, nd, 'lhs_dilation')
  rhs_dil = _ints(rhs_dilation, nd, 'rhs_dilation')
  in_sizes = tuple(lhs.shape[1:-1])
  kernel = tuple(rhs.shape[:-2])
  eff = tuple((k - 1) * r + 1 for k, r in zip(kernel, rhs_dil))
  if isinstance(padding, str):
    if any(l != 1 for l in lhs_dil):
      raise Unsupported('string padding with lhs_dilation (lax refuses it)')
    try:
      pads = lax.padtype_to_pads(in_sizes, eff, strides, padding)
    except (RuntimeError, TypeError, ValueError) as e:
      raise Unsupported(f'padding {padding!r}: {e}') from e
  else:
    pads = tuple(padding)
    if len(pads) != nd:
      raise Unsupported(f'padding {padding}')
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  # lax's output size: the lhs-dilated, padded input, strided windows.
  out = tuple((((n - 1) * l + 1 + lo + hi - e) // s + 1)
              if (n - 1) * l + 1 + lo + hi - e >= 0 else 0
              for n, l, (lo, hi), e, s in zip(in_sizes, lhs_dil, pads, eff,
                                              strides))
  if min(out) <= 0:
    raise Unsupported(f'empty output {out}')
  transposed = any(l != 1 for l in lhs_dil)
  crop, out_pad, pl, pr, in_after = [], [], [], [], []
  if transposed:
    if any(s != 1 for s in strides):
      raise Unsupported('lhs_dilation together with window_strides')
    for n, l, (lo, hi), e, o in zip(in_sizes, lhs_dil, pads, eff, out):
      # XLA: y[o] = sum_t xd[o + t*r - lo] w[t]; oneDNN's deconvolution:
      # y[i*l + t'*r - pl] += x[i] w'[t'], so w' = w flipped, pl = e-1-lo.
      a, b = e - 1 - lo, e - 1 - hi
      out_pad.append((max(-a, 0), max(-b, 0)))
      a, b = max(a, 0), max(b, 0)
      if (n - 1) * l + e - a - b != o - sum(out_pad[-1]):
        raise Unsupported(f'transposed padding {pads}')
      pl.append(a)
      pr.append(b)
      crop.append((0, 0))
      in_after.append(n)
    strides, out_conv = lhs_dil, tuple(o - lo - hi for o, (lo, hi) in
                                       zip(out, out_pad))
  else:
    for n, (lo, hi), e, s, o in zip(in_sizes, pads, eff, strides, out):
      c_lo, c_hi = max(-lo, 0), max(-hi, 0)
      lo, hi = max(lo, 0), max(hi, 0)
      m = n - c_lo - c_hi
      # oneDNN wants the last window to end at the padded input's end.
      hi -= (m + lo + hi - e) % s
      if hi < 0:
        c_hi, hi = c_hi - hi, 0
        m = n - c_lo - c_hi
      if m <= 0 or (m + lo + hi - e) // s + 1 != o:
        raise Unsupported(f'padding {pads}')
      crop.append((c_lo, c_hi))
      out_pad.append((0, 0))
      pl.append(lo)
      pr.append(hi)
      in_after.append(m)
    out_conv = out
  spec = Spec(transposed=transposed, in_spatial=tuple(in_after),
              kernel=kernel, out_spatial=tuple(out_conv),
              strides=tuple(strides), dilates=tuple(r - 1 for r in rhs_dil),
              padding_l=tuple(pl), padding_r=tuple(pr), in_dtype=in_dtype,
              out_dtype=out_dtype)
  if in_dtype != 'float32':
    # oneDNN has no bf16 kernels on some CPUs: ask it now, not at run time.
    for name, pass_ in PASSES.items():
      ok, info = _prepare(pass_, spec, lhs.shape[0], lhs.shape[-1],
                          rhs.shape[-1], threads())
      if not ok:
        raise Unsupported(f'oneDNN has no {in_dtype} {name} here: {info}')
  return Plan(spec, tuple(crop), tuple(out_pad))


def _pass_shapes(pass_: int, spec: Spec, n: int, c: int, o: int):
  """x, w, y shapes (XLA order) and (in dtype, out dtype) codes of a pass."""
  x = (n,) + spec.in_spatial + (c,)
  w = spec.kernel + (c, o)
  y = (n,) + spec.out_spatial + (o,)
  if pass_ == FWD:
    types = (spec.in_dtype, spec.out_dtype)
  elif pass_ == BWD_DATA:
    types = (spec.in_dtype, spec.in_dtype)
  else:
    types = (spec.in_dtype, 'float32')
  return x, w, y, types


def _prepare(pass_: int, spec: Spec, n: int, c: int, o: int,
             num_threads: int) -> tuple[bool, str]:
  """Creates (caches) a pass's primitive; (ok, implementation or error)."""
  lib = _loader.library()
  x, w, y, (ti, to) = _pass_shapes(pass_, spec, n, c, o)
  arr = lambda v: (ctypes.c_int64 * len(v))(*v)  # noqa: E731
  buf = ctypes.create_string_buffer(512)
  rc = lib.JaxsegOnednnPrepare(
      pass_, int(spec.transposed), _DTYPE_CODES[ti], _DTYPE_CODES[to],
      num_threads, spec.nd + 2, arr(x), arr(w), arr(y), arr(spec.strides),
      arr(spec.dilates), arr(spec.padding_l), arr(spec.padding_r), buf,
      len(buf))
  return rc == 0, buf.value.decode()


def cache_size() -> int:
  """Number of oneDNN passes created so far in this process."""
  return int(_loader.library().JaxsegOnednnCacheSize())


# ---------------------------------------------------------------------------
# The kernel call and its transformations.

def _ffi(pass_: int, spec: Spec, num_threads: int):
  """(a, b) -> the pass's output: (x, w) -> y, (dy, w) -> dx, (x, dy) -> dw
  (f32), sizes from the operands."""
  def call(a, b):
    n = a.shape[0]
    if pass_ == FWD:
      shape, dtype = (n,) + spec.out_spatial + (b.shape[-1],), spec.out_dtype
    elif pass_ == BWD_DATA:
      shape, dtype = (n,) + spec.in_spatial + (b.shape[-2],), spec.in_dtype
    else:
      shape, dtype = spec.kernel + (a.shape[-1], b.shape[-1]), 'float32'
    i64 = lambda v: np.asarray(v, np.int64)  # noqa: E731
    return jax.ffi.ffi_call(_TARGETS[pass_],
                            jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)))(
        a, b, transposed=np.int64(spec.transposed),
        strides=i64(spec.strides), dilates=i64(spec.dilates),
        padding_l=i64(spec.padding_l), padding_r=i64(spec.padding_r),
        threads=np.int64(num_threads))
  return call


def _factors(nd: int):
  sp = lambda p: ' '.join(f'{p}{i}' for i in range(nd))  # noqa: E731
  return f'n {sp("a")} c', f'{sp("k")} c o', f'n {sp("b")} o'


def _batch_axes(sharding, shape) -> Optional[tuple]:
  """Mesh axes of a NamedSharding's first dimension (None: replicated)."""
  if not isinstance(sharding, NamedSharding) or not sharding.spec:
    return None
  axes = sharding.spec[0]
  if axes is None:
    return None
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  size = math.prod(sharding.mesh.shape[a] for a in axes)
  return axes if size > 1 and shape[0] % size == 0 else None


def _local_devices(mesh) -> int:
  here = jax.process_index()
  return sum(1 for d in mesh.devices.flat if d.process_index == here)


@functools.lru_cache(maxsize=None)
def _partitioned(pass_: int, spec: Spec):
  """The pass as a custom_partitioning function of (a, b)."""
  fn = custom_partitioning(lambda a, b: _ffi(pass_, spec, threads())(a, b))
  x, w, y = _factors(spec.nd)
  rank = spec.nd + 2

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    first = arg_shapes[0]
    axes = _batch_axes(first.sharding, first.shape)
    if mesh.empty:  # shardings without a mesh: run replicated
      rep = jax.sharding.GSPMDSharding.get_replicated(
          first.sharding._device_assignment)  # pylint: disable=protected-access
      act, axes = rep, None
    else:
      rep = NamedSharding(mesh, P())
      act = NamedSharding(mesh, P(axes, *([None] * (rank - 1))))
    call = _ffi(pass_, spec, threads(_local_devices(mesh) if not mesh.empty
                                     else 1))
    if pass_ != BWD_WEIGHTS:
      return mesh, call, act, (act, rep)

    def weight_grad(a, b):
      dw = call(a, b)
      return lax.psum(dw, axes) if axes else dw
    return mesh, weight_grad, rep, (act, act)

  if pass_ == FWD:
    rule, reduce = f'{x}, {w} -> {y}', ()
  elif pass_ == BWD_DATA:
    rule, reduce = f'{y}, {w} -> {x}', ()
  else:
    rule, reduce = f'{x}, {y} -> {w}', ('n',)
  others = tuple(f for f in dict.fromkeys(rule.replace(',', ' ').replace(
      '->', ' ').split()) if f != 'n')
  fn.def_partition(partition=partition, sharding_rule=rule,
                   reduction_factors=reduce, need_replication_factors=others)
  return fn


@functools.lru_cache(maxsize=None)
def _batched(pass_: int, spec: Spec):
  """The pass with a vmap rule: activations-only batches fold into N."""
  inner = _partitioned(pass_, spec)

  @jax.custom_batching.custom_vmap
  def fn(a, b):
    return inner(a, b)

  @fn.def_vmap
  def rule(axis_size, in_batched, a, b):
    a_batched, b_batched = in_batched
    if pass_ != BWD_WEIGHTS and a_batched and not b_batched:
      out = fn(a.reshape((-1,) + a.shape[2:]), b)
      return out.reshape((axis_size, -1) + out.shape[1:]), True
    # Batched weights (or the weight gradient): one call per element.
    grow = lambda v, batched: (v if batched else  # noqa: E731
                               jnp.broadcast_to(v, (axis_size,) + v.shape))
    out = lax.map(lambda ab: fn(*ab), (grow(a, a_batched), grow(b, b_batched)))
    return out, True
  return fn


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(spec: Spec, x, w):
  return _batched(FWD, spec)(x, w)


def _conv_fwd(spec, x, w):
  return _batched(FWD, spec)(x, w), (x, w)


def _conv_bwd(spec, res, dy):
  x, w = res
  dy = dy.astype(spec.in_dtype)
  dx = _batched(BWD_DATA, spec)(dy, w)
  dw = _batched(BWD_WEIGHTS, spec)(x, dy).astype(w.dtype)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def run(p: Plan, lhs, rhs):
  """The convolution of plan `p` (from `plan(lhs, rhs, ...)`)."""
  if any(c != (0, 0) for c in p.crop):
    lhs = lhs[(slice(None),) + tuple(slice(lo, lhs.shape[1 + i] - hi)
                                     for i, (lo, hi) in enumerate(p.crop))]
  y = _conv(p.spec, lhs, rhs)
  if any(q != (0, 0) for q in p.out_pad):
    y = jnp.pad(y, ((0, 0),) + p.out_pad + ((0, 0),))
  return y


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None,
                         preferred_element_type=None, *,
                         fallback: bool = True):
  """lax.conv_general_dilated, on oneDNN where `plan` supports it.

  Same arguments and result as lax.conv_general_dilated (as flax's nn.Conv
  passes them; `precision` is ignored by the oneDNN path: it computes in
  the operands' type with f32 accumulation). Differentiable (custom_vjp),
  vmappable, and partitioned per batch shard under jit with sharded inputs.
  What `plan` refuses is lax.conv_general_dilated itself, or, with
  fallback=False, raises `Unsupported` (the reason in its message).
  """
  try:
    p = plan(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
             dimension_numbers, feature_group_count, preferred_element_type)
  except Unsupported:
    if not fallback:
      raise
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  return run(p, lhs, rhs)


def _transpose_padding(k: int, s: int, padding) -> tuple[int, int]:
  """lax.conv_transpose's padding of the dilated input (its private
  _conv_transpose_padding)."""
  if padding == 'SAME':
    total = k + s - 2
    lo = k - 1 if s > k - 1 else -(-total // 2)
  elif padding == 'VALID':
    total = k + s - 2 + max(k - s, 0)
    lo = k - 1
  else:
    pads = tuple(k - p - 1 for p in padding)
    lo, total = pads[0], sum(pads)
  return lo, total - lo


def conv_transpose(lhs, rhs, strides: Sequence[int],
                   padding: Union[str, Sequence[tuple[int, int]]],
                   rhs_dilation=None, dimension_numbers=None,
                   transpose_kernel: bool = False, precision=None,
                   preferred_element_type=None,
                   use_consistent_padding: bool = False, *,
                   fallback: bool = True, conv=None):
  """lax.conv_transpose (flax's nn.ConvTranspose), through
  `conv_general_dilated`: the same padding rules, then a convolution with
  lhs_dilation = strides. `conv` replaces conv_general_dilated (with its
  signature, without `fallback`), e.g. by a dispatcher that calls it."""
  nd = lhs.ndim - 2
  if dimension_numbers is None:
    dimension_numbers = {2: ('NHWC', 'HWIO', 'NHWC'),
                         3: ('NHWDC', 'HWDIO', 'NHWDC')}.get(nd)
  if dimension_numbers is None or nd not in _SPECS:
    if not fallback:
      raise Unsupported(f'{nd}-d transposed convolution')
    return lax.conv_transpose(lhs, rhs, strides, padding, rhs_dilation,
                              dimension_numbers, transpose_kernel, precision,
                              preferred_element_type, use_consistent_padding)
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  k_sdims = np.take(rhs.shape, dn.rhs_spec)[2:]
  rhs_dilation = (1,) * nd if rhs_dilation is None else tuple(rhs_dilation)
  if use_consistent_padding or (isinstance(padding, str) and
                                padding in ('SAME', 'VALID')):
    eff = [(k - 1) * r + 1 for k, r in zip(k_sdims, rhs_dilation)]
    rep = [padding] * nd if isinstance(padding, str) else padding
    pads = tuple(_transpose_padding(k, s, p)
                 for k, s, p in zip(eff, strides, rep))
  else:
    pads = padding
  if transpose_kernel:
    for axis in np.array(dn.rhs_spec)[2:]:
      rhs = jnp.flip(rhs, int(axis))
    rhs = jnp.swapaxes(rhs, dn.rhs_spec[0], dn.rhs_spec[1])
  if conv is not None:
    return conv(lhs, rhs, (1,) * nd, pads, tuple(strides), rhs_dilation, dn,
                precision=precision,
                preferred_element_type=preferred_element_type)
  return conv_general_dilated(
      lhs, rhs, (1,) * nd, pads, tuple(strides), rhs_dilation, dn,
      precision=precision, preferred_element_type=preferred_element_type,
      fallback=fallback)


def describe(lhs, rhs, window_strides, padding, lhs_dilation=None,
             rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, preferred_element_type=None,
             num_devices: int = 1) -> dict:
  """{pass name: oneDNN's implementation} of a supported convolution
  (e.g. 'brg:avx512_core'); raises Unsupported."""
  p = plan(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
           dimension_numbers, feature_group_count, preferred_element_type)
  out = {}
  for name, pass_ in PASSES.items():
    ok, info = _prepare(pass_, p.spec, lhs.shape[0], lhs.shape[-1],
                        rhs.shape[-1], threads(num_devices))
    out[name] = info if ok else f'unimplemented: {info}'
  return out
