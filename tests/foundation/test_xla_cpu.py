"""jaxseg.xla_cpu: the XLA:CPU flag jaxseg sets, and that XLA obeys it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxseg import xla_cpu

SUPPORTED = xla_cpu.MEASURED_JAXLIB[0]


@pytest.mark.parametrize('mode,kinds', [(None, 'dot,reduce'),
                                        ('fast', 'dot'), (' Fast ', 'dot')])
def test_adds_the_mode_option_and_keeps_other_flags(mode, kinds):
  env = {'XLA_FLAGS': '--xla_backend_optimization_level=0'}
  if mode is not None:
    env['JAXSEG_XLA_CPU'] = mode
  assert xla_cpu.configure(env, SUPPORTED)
  assert env['XLA_FLAGS'] == ('--xla_backend_optimization_level=0 '
                              f'--xla_cpu_experimental_ynn_fusion_type={kinds}')


@pytest.mark.parametrize('env,version', [
    ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type='}, SUPPORTED),
    ({'JAXSEG_XLA_CPU': 'xla'}, SUPPORTED),  # XLA's own defaults
    ({}, (0, 4)),  # an XLA that may not know the option
])
def test_leaves_the_user_choice_and_unknown_versions_alone(env, version):
  before = dict(env)
  assert not xla_cpu.configure(env, version)
  assert env == before


def test_unknown_mode_is_one_clear_error():
  with pytest.raises(ValueError, match=r"JAXSEG_XLA_CPU='fsat'.*fast, xla"):
    xla_cpu.configure({'JAXSEG_XLA_CPU': 'fsat'}, SUPPORTED)


def test_compiler_options_name_the_same_kinds():
  assert xla_cpu.compiler_options() == {
      'xla_cpu_experimental_ynn_fusion_type':
          'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
  assert xla_cpu.compiler_options('xla') is None


_PROBE = """
import json, jaxseg.xla_cpu
jaxseg.xla_cpu.configure()
import jax, jax.numpy as jnp
from jax import lax
x, k = jnp.ones((4, 64, 64, 32)), jnp.ones((3, 3, 32, 32))  # YNNPACK's size
conv = lambda k: lax.conv_general_dilated(
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()
hlo = jax.jit(jax.grad(conv)).lower(k).compile().as_text()
print(json.dumps({'ynn_conv': '__ynn_fusion' in hlo}))
"""


def _run(script_args, **extra):
  """Runs python with `script_args` in a fresh process; its last JSON line."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAXSEG_XLA_CPU')}
  env.update(JAX_PLATFORMS='cpu', **extra)
  out = subprocess.run([sys.executable, *script_args], env=env, check=True,
                       capture_output=True, text=True, timeout=600).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(xla_cpu._jaxlib_version() not in xla_cpu.MEASURED_JAXLIB,
                    reason='jaxseg sets its XLA option only on measured jaxlibs')
def test_convolutions_leave_ynnpack_unless_xla_defaults_are_asked_for():
  probe = lambda **extra: _run(['-c', _PROBE], **extra)['ynn_conv']  # noqa: E731
  assert probe(JAXSEG_XLA_CPU='xla')  # XLA's default: YNNPACK convs
  assert not probe()
  assert not probe(JAXSEG_XLA_CPU='fast')


@pytest.mark.slow
def test_default_mode_gradient_is_as_accurate_as_xla_defaults():
  # The whole train step (oneDNN's convolutions, the fused batch and layer
  # norms, the argmax max-pool gradient, the loss) in float32 against
  # float64, against the same step with XLA's convolutions and defaults
  # (JAXSEG_ONEDNN=0 JAXSEG_XLA_CPU=xla).
  script = str(Path(__file__).with_name('gradient_accuracy.py'))
  ours = _run([script])['rel_l2']
  reference = _run([script], JAXSEG_XLA_CPU='xla', JAXSEG_ONEDNN='0')['rel_l2']
  assert ours < 2e-6 and ours < 1.2 * reference, (ours, reference)


@pytest.mark.slow
def test_importing_jaxseg_sets_no_xla_option():
  # (Libraries jaxseg.training.loop imports set TF_CPP_MIN_LOG_LEVEL and
  # TPU_SKIP_MDS_QUERY themselves; jaxseg sets nothing.)
  script = ('import json, os; before = dict(os.environ); import jaxseg, '
            'jaxseg.models, jaxseg.training.loop; print(json.dumps(sorted('
            'k for k in os.environ if os.environ[k] != before.get(k) and '
            'k.startswith(("XLA", "JAX")))))')
  assert _run(['-c', script]) == []


@pytest.mark.slow
def test_configure_after_the_backend_started_warns_and_sets_nothing():
  script = ('import json, os, warnings, jax; jax.devices(); '
            'from jaxseg import xla_cpu\n'
            'with warnings.catch_warnings(record=True) as w:\n'
            '  warnings.simplefilter("always"); done = xla_cpu.configure()\n'
            'print(json.dumps([done, "XLA_FLAGS" in os.environ, len(w)]))')
  assert _run(['-c', script]) == [False, False, 1]


def test_freed_memory_is_kept_on_machines_with_memory_to_spare():
  gib = 2 ** 30
  assert not xla_cpu.wants_kept_memory({}, physical_bytes=8 * gib)   # a laptop
  assert not xla_cpu.wants_kept_memory({}, physical_bytes=24 * gib)
  assert xla_cpu.wants_kept_memory({}, physical_bytes=32 * gib)
  assert xla_cpu.wants_kept_memory({'JAXSEG_MALLOC': 'keep'}, physical_bytes=8 * gib)
  assert not xla_cpu.wants_kept_memory({'JAXSEG_MALLOC': 'system'},
                                       physical_bytes=64 * gib)
  with pytest.raises(ValueError, match="JAXSEG_MALLOC='kep'"):
    xla_cpu.wants_kept_memory({'JAXSEG_MALLOC': 'kep'})
