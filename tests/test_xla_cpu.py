"""jaxseg.xla_cpu: the XLA:CPU flag jaxseg sets, and that XLA obeys it."""

import json
import os
import subprocess
import sys

import pytest

from jaxseg import xla_cpu

SUPPORTED = xla_cpu.MEASURED_JAXLIB[0]


def test_adds_the_flag_when_asked_and_keeps_other_flags():
  env = {'XLA_FLAGS': '--xla_backend_optimization_level=0',
         'JAXSEG_XLA_CPU': 'fast'}
  assert xla_cpu.set_defaults(env, SUPPORTED)
  assert env['XLA_FLAGS'] == ('--xla_backend_optimization_level=0 '
                              '--xla_cpu_experimental_ynn_fusion_type=dot')


@pytest.mark.parametrize('env,version', [
    ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=',
      'JAXSEG_XLA_CPU': 'fast'}, SUPPORTED),
    ({}, SUPPORTED),  # not asked for: XLA's defaults
    ({'JAXSEG_XLA_CPU': 'fast'}, (0, 4)),  # an XLA that may not know it
])
def test_leaves_the_user_choice_and_unknown_versions_alone(env, version):
  before = dict(env)
  assert not xla_cpu.set_defaults(env, version)
  assert env == before


_PROBE = """
import json, jaxseg, jax, jax.numpy as jnp
from jax import lax
x, k = jnp.ones((4, 64, 64, 32)), jnp.ones((3, 3, 32, 32))  # YNNPACK's size
conv = lambda k: lax.conv_general_dilated(
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()
hlo = jax.jit(jax.grad(conv)).lower(k).compile().as_text()
print(json.dumps({'ynn_conv': '__ynn_fusion' in hlo}))
"""


@pytest.mark.skipif(xla_cpu._jaxlib_version() not in xla_cpu.MEASURED_JAXLIB,
                    reason='jaxseg sets its XLA flag only on measured jaxlibs')
def test_convolutions_leave_ynnpack_when_asked():
  def probe(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ('XLA_FLAGS', 'JAXSEG_XLA_CPU')}
    env.update(JAX_PLATFORMS='cpu', **extra)
    out = subprocess.run([sys.executable, '-c', _PROBE], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])['ynn_conv']
  assert probe()  # XLA's default: YNNPACK convs
  assert not probe(JAXSEG_XLA_CPU='fast')
