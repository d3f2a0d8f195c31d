"""PatchConv2D (model/convolution.py) is nn.Conv computed as a matmul over patches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.model.convolution import PatchConv2D
from audio_interaction.model.layers import dense_init


@pytest.mark.parametrize("shape,kernel,stride", [((2, 17, 80, 1), 3, 2), ((1, 9, 39, 5), 3, 2),
                                                 ((3, 8, 11, 4), 2, 1), ((1, 12, 13, 2), 5, 3)])
def test_patch_conv_equals_nn_conv_with_the_same_parameters(shape, kernel, stride):
  x = jax.random.normal(jax.random.key(1), shape)
  reference = nn.Conv(6, (kernel, kernel), strides=(stride, stride), padding="VALID",
                      kernel_init=dense_init((None, None, "conv_in", "conv_out")))
  patch = PatchConv2D(6, kernel, stride)
  params = nn.unbox(patch.init(jax.random.key(0), x))
  # The same tree, shapes and initial values: checkpoints of the nn.Conv stem still load.
  reference_params = nn.unbox(reference.init(jax.random.key(0), x))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference_params)
  params = jax.tree_util.tree_map(  # a non-zero bias, so it is checked too
      lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  got, want = patch.apply(params, x), reference.apply(params, x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # And its gradients, which the train step takes.
  loss = lambda module: lambda p: jnp.sum(jnp.sin(module.apply(p, x)))
  grads = jax.grad(loss(patch))(params), jax.grad(loss(reference))(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                         *grads)
