"""Batch, instance, group and layer norm with a fused CPU backward pass.

flax's normalisation layers compute their statistics with `mean(x)` and
`mean(x^2)` and leave the backward pass to autodiff. Here the same layers
(subclasses of nn.BatchNorm, nn.LayerNorm, nn.GroupNorm and
nn.InstanceNorm: same fields, parameter and batch-statistic names, shapes
and auto-names) compute, in programs lowered for the CPU
(jaxseg.models.ops.on_cpu):

  forward   mean and mean of squares in float32 (flax's fast variance, var
            = max(E[x^2] - E[x]^2, 0)), then y = (x - mean) * (rstd * scale)
            + bias;
  backward  a closed form with one reduction pass over the activations
            (per channel and statistic group: sum(dy) and sum(dy * xhat),
            xhat = (x - mean) * rstd) and one elementwise pass
            dx = rstd * (scale * dy - s1 / M - xhat * s2 / M), instead of
            what autodiff derives from the forward formula.

Values equal flax's up to float rounding (tests/models/test_norms.py checks values
and gradients against flax in float64 and float32). The lowering for any
platform but the CPU runs flax's own formulas.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxseg.models import ops


def _stats(x, axes, stat_dtype):
  """flax's fast variance: (mean, var) over axes (kept), in stat_dtype."""
  x = x.astype(stat_dtype)
  mean = jnp.mean(x, axes, keepdims=True)
  mean2 = jnp.mean(lax.square(x), axes, keepdims=True)
  return mean, jnp.maximum(0.0, mean2 - lax.square(mean))


def _flax_norm(x, scale, bias, *, axes, epsilon, dtype, stat_dtype):
  """flax's _compute_stats + _normalize, in flax's order of operations."""
  mean, var = _stats(x, axes, stat_dtype)
  y = x - mean
  mul = lax.rsqrt(var + epsilon)
  if scale is not None:
    mul = mul * scale
  y = y * mul
  if bias is not None:
    y = y + bias
  return y.astype(dtype), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused_norm(x, scale, bias, axes, epsilon, dtype):
  return _fused_fwd(x, scale, bias, axes, epsilon, dtype)[0]


def _fused_fwd(x, scale, bias, axes, epsilon, dtype):
  # Statistics in the dtype of scale (normalize() casts it to stat_dtype).
  mean, var = _stats(x, axes, scale.dtype)
  rstd = lax.rsqrt(var + epsilon)
  y = (x - mean) * (rstd * scale) + bias
  return (y.astype(dtype), mean, var), (x, mean, rstd, scale)


def _sum(x, axes):
  return jnp.sum(x, axes, keepdims=True) if axes else x


def _fused_bwd(axes, epsilon, dtype, residuals, cotangents):
  del epsilon, dtype
  x, mean, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  f32 = rstd.dtype
  if isinstance(dy, jax.custom_derivatives.SymbolicZero):
    dy = jnp.zeros(x.shape, f32)
  dy = dy.astype(f32)
  # scale and bias are 1 on the axes they do not vary along (summing over an
  # axis of size 1 changes nothing, whichever way it is counted).
  nonfeature = tuple(i for i in range(x.ndim) if scale.shape[i] == 1)
  common = tuple(i for i in axes if i in nonfeature)
  size = 1
  for i in axes:
    size *= x.shape[i]
  centred = x.astype(f32) - mean
  # One pass over the activations: per (statistic group, channel) sums.
  a = _sum(dy, common)
  b = _sum(dy * centred, common) * rstd if common else dy * centred * rstd
  rest = tuple(i for i in nonfeature if i not in common)
  dbias = _sum(a, rest)
  dscale = _sum(b, rest)
  within = tuple(i for i in axes if i not in common)
  s1 = _sum(scale * a, within) / size
  s2 = _sum(scale * b, within) / size
  xhat = centred * rstd
  dx = rstd * (scale * dy - s1 - xhat * s2)
  # The statistics are outputs too (batch norm's running averages).
  if not isinstance(dmean, jax.custom_derivatives.SymbolicZero):
    dx = dx + dmean.astype(f32) / size
  if not isinstance(dvar, jax.custom_derivatives.SymbolicZero):
    dx = dx + dvar.astype(f32) * (2.0 / size) * centred
  return (dx.astype(x.dtype), dscale.astype(scale.dtype),
          dbias.astype(scale.dtype))


def _fused_fwd_symbolic(x, scale, bias, axes, epsilon, dtype):
  return _fused_fwd(x.value, scale.value, bias.value, axes, epsilon, dtype)


_fused_norm.defvjp(_fused_fwd_symbolic, _fused_bwd, symbolic_zeros=True)


def normalize(x, scale, bias, *, axes: Sequence[int], epsilon: float,
              dtype: Any, stat_dtype: Any):
  """(y, mean, var): x normalised over `axes` with its own statistics.

  x (any shape); scale and bias broadcast to x (1 on the statistic axes),
  or None; mean and var have x's rank (1 on `axes`), in stat_dtype (flax:
  the module dtype or x's, at least float32). y is in `dtype`: the fused
  formulation in CPU lowerings, flax's elsewhere.
  """
  axes = tuple(sorted(a % x.ndim for a in axes))
  flax_fn = functools.partial(_flax_norm, axes=axes, epsilon=epsilon,
                              dtype=dtype, stat_dtype=stat_dtype)
  if scale is None or bias is None:  # the fused form needs both
    return flax_fn(x, scale, bias)
  scale, bias = scale.astype(stat_dtype), bias.astype(stat_dtype)
  fused = lambda x, s, b: _fused_norm(x, s, b, axes, epsilon, dtype)  # noqa: E731
  return ops.on_cpu(fused, flax_fn, x, scale, bias)


# ---------------------------------------------------------------------------
# Channels-last batch, instance and group norm: statistics per channel first.
# ---------------------------------------------------------------------------
#
# x (N, *S, C) is viewed as (N, P, C), P = prod(S). Every statistic group of
# these three norms is a union of (sample, channel) columns: batch norm's
# of all samples of a channel, instance norm's of one, group norm's of the
# Cg channels of a group of one sample. So both passes reduce over P only
# (a column reduction over contiguous rows of C values), then combine the
# (N, C) partial sums per group, a tiny step; the elementwise passes use
# per-(sample, channel) coefficients. (Reducing the (N, P, G, Cg) view over
# P and Cg at once, as flax does, runs 3-5x slower on XLA:CPU.)


def _combine(partial, kind, groups):
  """(N, C) partial sums -> per statistic group: (1, C), (N, C) or (N, G)."""
  if kind == 'batch':
    return jnp.sum(partial, 0, keepdims=True)
  if kind == 'group':
    n, c = partial.shape
    return jnp.sum(partial.reshape(n, groups, c // groups), -1)
  return partial


def _expand(grouped, kind, channels):
  """Per-group values -> per (sample or 1, channel)."""
  if kind == 'group':
    return jnp.repeat(grouped, channels // grouped.shape[-1], axis=-1)
  return grouped


def _group_size(shape, kind, groups):
  n, p, c = shape
  return p * (n if kind == 'batch' else 1) * (c // groups if kind == 'group'
                                             else 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _channel_norm(x, scale, bias, kind, groups, epsilon, dtype):
  return _channel_fwd(x, scale, bias, kind, groups, epsilon, dtype)[0]


def _channel_fwd(x, scale, bias, kind, groups, epsilon, dtype):
  """x (N, P, C) -> (y, per-group mean, var), residuals."""
  f32 = scale.dtype
  xf = x.astype(f32)
  size = _group_size(x.shape, kind, groups)
  s1 = _combine(jnp.sum(xf, 1), kind, groups)
  s2 = _combine(jnp.sum(lax.square(xf), 1), kind, groups)
  mean = s1 / size
  var = jnp.maximum(0.0, s2 / size - lax.square(mean))
  rstd = lax.rsqrt(var + epsilon)
  m = _expand(mean, kind, x.shape[-1])
  r = _expand(rstd, kind, x.shape[-1])
  a = r * scale
  y = (xf - m[:, None]) * a[:, None] + bias
  return (y.astype(dtype), mean, var), (x, m, r, scale)


def _channel_bwd(kind, groups, epsilon, dtype, residuals, cotangents):
  del epsilon, dtype
  x, m, r, scale = residuals
  dy, dmean, dvar = cotangents
  f32 = scale.dtype
  if isinstance(dy, jax.custom_derivatives.SymbolicZero):
    dy = jnp.zeros(x.shape, f32)
  dy = dy.astype(f32)
  centred = x.astype(f32) - m[:, None]
  size = _group_size(x.shape, kind, groups)
  channels = x.shape[-1]
  # One pass over the activations: per (sample, channel) sums.
  a = jnp.sum(dy, 1)
  b = jnp.sum(dy * centred, 1)
  dbias = jnp.sum(a, 0)
  dscale = jnp.sum(b * r, 0)
  c1 = _expand(_combine(scale * a, kind, groups), kind, channels) / size
  c2 = _expand(_combine(scale * b * r, kind, groups), kind, channels) / size
  k0 = -r * c1
  k1 = -r * r * c2
  # The statistics are outputs too (batch norm's running averages).
  if not isinstance(dmean, jax.custom_derivatives.SymbolicZero):
    k0 = k0 + _expand(dmean.astype(f32), kind, channels) / size
  if not isinstance(dvar, jax.custom_derivatives.SymbolicZero):
    k1 = k1 + _expand(dvar.astype(f32), kind, channels) * (2.0 / size)
  dx = dy * (r * scale)[:, None] + centred * k1[:, None] + k0[:, None]
  return dx.astype(x.dtype), dscale, dbias


def _channel_fwd_symbolic(x, scale, bias, kind, groups, epsilon, dtype):
  return _channel_fwd(x.value, scale.value, bias.value, kind, groups,
                      epsilon, dtype)


_channel_norm.defvjp(_channel_fwd_symbolic, _channel_bwd, symbolic_zeros=True)


def _flax_channel_norm(x, scale, bias, *, kind, groups, epsilon, dtype,
                       stat_dtype):
  """flax's BatchNorm / InstanceNorm / GroupNorm formulas on x (N, *S, C)."""
  nd = x.ndim
  c = x.shape[-1]
  if kind == 'group':
    grouped = x.reshape(x.shape[:-1] + (groups, c // groups))
    mean, var = _stats(grouped, tuple(range(1, nd - 1)) + (nd,), stat_dtype)
    mean = jnp.repeat(mean, c // groups, axis=-1).reshape(
        mean.shape[:-2] + (c,))
    var = jnp.repeat(var, c // groups, axis=-1).reshape(var.shape[:-2] + (c,))
  else:
    axes = tuple(range(nd - 1)) if kind == 'batch' else tuple(range(1, nd - 1))
    mean, var = _stats(x, axes, stat_dtype)
  y = x - mean
  mul = lax.rsqrt(var + epsilon)
  mul = mul * scale
  y = y * mul + bias
  if kind == 'batch':
    return y.astype(dtype), mean.reshape(1, c), var.reshape(1, c)
  return y.astype(dtype), None, None


def normalize_channels(x, scale, bias, *, kind: str, epsilon: float,
                       dtype: Any, stat_dtype: Any, groups: int = 1):
  """(y, mean, var) of batch ('batch'), instance or group norm, channels last.

  x (N, *S, C); scale and bias (C,). mean and var are batch norm's (1, C)
  statistics (None for the others): the fused formulation in CPU lowerings,
  flax's elsewhere.
  """
  scale, bias = scale.astype(stat_dtype), bias.astype(stat_dtype)
  native = functools.partial(_flax_channel_norm, kind=kind, groups=groups,
                             epsilon=epsilon, dtype=dtype,
                             stat_dtype=stat_dtype)

  def fused(x, scale, bias):
    n, c = x.shape[0], x.shape[-1]
    y, mean, var = _channel_norm(x.reshape(n, -1, c), scale, bias, kind,
                                 groups, epsilon, dtype)
    if kind != 'batch':
      mean = var = None
    return y.reshape(x.shape), mean, var
  return ops.on_cpu(fused, native, x, scale, bias)


def _affine(module, shape, ndim, feature_axes):
  """The module's scale and bias params reshaped to broadcast over ndim."""
  full = [1] * ndim
  for ax, n in zip(feature_axes, shape):
    full[ax] = n
  scale = (module.param('scale', module.scale_init, tuple(shape),
                        module.param_dtype).reshape(full)
           if module.use_scale else None)
  bias = (module.param('bias', module.bias_init, tuple(shape),
                       module.param_dtype).reshape(full)
          if module.use_bias else None)
  return scale, bias


def _dtypes(module, x, *params):
  """(output dtype, statistics dtype) as flax's layers pick them."""
  out = nn.dtypes.canonicalize_dtype(
      x, *(p for p in params if p is not None), dtype=module.dtype)
  stat = jnp.promote_types(module.dtype or x.dtype, jnp.float32)
  return dict(dtype=out, stat_dtype=stat)


def _plain(module) -> bool:
  """Settings the fused form covers (the zoo's): no masks, pmaps, ..."""
  return (module.axis_name is None and module.use_fast_variance and
          module.force_float32_reductions)


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm; in training, statistics and gradient fused (CPU)."""

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None, *,
               mask=None):
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average)
    if (use_running_average or mask is not None or not _plain(self)):
      return super().__call__(  # merge_param takes it from one place only
          x, None if self.use_running_average is not None else
          use_running_average, mask=mask)
    feature_axes = tuple(a % x.ndim for a in (
        self.axis if isinstance(self.axis, (tuple, list)) else (self.axis,)))
    axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    shape = [x.shape[a] for a in feature_axes]
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda s: jnp.zeros(s, jnp.float32), shape)
    ra_var = self.variable('batch_stats', 'var',
                           lambda s: jnp.ones(s, jnp.float32), shape)
    scale, bias = _affine(self, shape, x.ndim, feature_axes)
    if _channels_last(x, feature_axes, scale, bias):
      y, mean, var = normalize_channels(
          x, scale.reshape(-1), bias.reshape(-1), kind='batch',
          epsilon=self.epsilon,
          **_dtypes(self, x, scale, bias))
    else:
      y, mean, var = normalize(x, scale, bias, axes=axes,
                               epsilon=self.epsilon,
                               **_dtypes(self, x, scale, bias))
    if not self.is_initializing():
      mean = lax.stop_gradient(mean.reshape(shape))
      var = lax.stop_gradient(var.reshape(shape))
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


class LayerNorm(nn.LayerNorm):
  """nn.LayerNorm (over `reduction_axes`, affine on `feature_axes`)."""

  @nn.compact
  def __call__(self, x, *, mask=None):
    if mask is not None or not _plain(self):
      return super().__call__(x, mask=mask)
    axes = _axes(self.reduction_axes, x.ndim)
    feature_axes = _axes(self.feature_axes, x.ndim)
    scale, bias = _affine(self, [x.shape[a] for a in feature_axes], x.ndim,
                          feature_axes)
    return normalize(x, scale, bias, axes=axes, epsilon=self.epsilon,
                     **_dtypes(self, x, scale, bias))[0]


class InstanceNorm(nn.InstanceNorm):
  """nn.InstanceNorm: each channel of each sample over the spatial axes."""

  @nn.compact
  def __call__(self, x, *, mask=None):
    if mask is not None or not _plain(self):
      return super().__call__(x, mask=mask)
    feature_axes = _axes(self.feature_axes, x.ndim)
    axes = tuple(i for i in range(1, x.ndim) if i not in feature_axes)
    scale, bias = _affine(self, [x.shape[a] for a in feature_axes], x.ndim,
                          feature_axes)
    if _channels_last(x, feature_axes, scale, bias):
      return normalize_channels(
          x, scale.reshape(-1), bias.reshape(-1), kind='instance',
          epsilon=self.epsilon,
          **_dtypes(self, x, scale, bias))[0]
    return normalize(x, scale, bias, axes=axes, epsilon=self.epsilon,
                     **_dtypes(self, x, scale, bias))[0]


class GroupNorm(nn.GroupNorm):
  """nn.GroupNorm over groups of channels (channels last)."""

  @nn.compact
  def __call__(self, x, *, mask=None):
    if (mask is not None or not _plain(self) or
        (self.reduction_axes is not None and
         _axes(self.reduction_axes, x.ndim) != tuple(range(1, x.ndim)))):
      return super().__call__(x, mask=mask)
    channels = x.shape[-1]
    groups = self.num_groups
    if groups is None:
      groups = channels // self.group_size
    if groups * (channels // groups) != channels:
      return super().__call__(x, mask=mask)  # flax's own error message
    scale, bias = _affine(self, [channels], x.ndim, (x.ndim - 1,))
    dtypes = _dtypes(self, x, scale, bias)
    if _channels_last(x, (x.ndim - 1,), scale, bias):
      return normalize_channels(
          x, scale.reshape(-1), bias.reshape(-1), kind='group', groups=groups,
          epsilon=self.epsilon, **dtypes)[0]
    split = x.shape[:-1] + (groups, channels // groups)
    grouped = lambda p: None if p is None else p.reshape(  # noqa: E731
        p.shape[:-1] + (groups, channels // groups))
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    y = normalize(x.reshape(split), grouped(scale), grouped(bias), axes=axes,
                  epsilon=self.epsilon, **dtypes)[0]
    return y.reshape(x.shape)


def _channels_last(x, feature_axes, scale, bias) -> bool:
  """normalize_channels covers it: channels last, scale and bias, N and C."""
  return (tuple(feature_axes) == (x.ndim - 1,) and x.ndim >= 3 and
          scale is not None and bias is not None)


def _axes(axes, ndim):
  if isinstance(axes, int):
    axes = (axes,)
  return tuple(sorted(a % ndim for a in axes))
