"""Meshes and the logical-axis → mesh-axis rules: the only place that knows about devices.

Modules name logical axes (`batch`, `embed`, `heads`, `mlp`, `vocab`, ...); the
config's `sharding.logical_axis_rules` maps them to mesh axes (`data`, `fsdp`,
`tensor`); this module turns that into `NamedSharding`s for params and batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]


def resolve_mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fills the one `-1` axis with the devices left; every axis of MESH_AXES gets a size.

  Raises:
    ValueError: unknown axis names, more than one -1, or sizes that do not divide
      the device count.
  """
  unknown = set(mesh_config) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; mesh axes are {MESH_AXES}")
  shape = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in shape.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"only one mesh axis may be -1, got {free}")
  fixed = math.prod(size for size in shape.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"mesh {dict(mesh_config)} cannot fill {num_devices} devices")
    shape[free[0]] = num_devices // fixed
  if math.prod(shape.values()) != num_devices:
    raise ValueError(f"mesh {shape} needs {math.prod(shape.values())} devices, "
                     f"{num_devices} are available")
  return shape


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None
              ) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_config, len(devices))
  # Auto axes: the compiler propagates shardings from the params, the batch and the
  # logical constraints (GSPMD), rather than tracking them in every array's type.
  return jax.make_mesh(tuple(shape[a] for a in MESH_AXES), MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
  """Maps a pytree of logical `PartitionSpec`s to `NamedSharding`s on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Sharding of a batch array [B, ...]: the batch axis over the `batch` rule's mesh axes."""
  logical = PartitionSpec("batch", *([None] * (ndim - 1)))
  return nn.logical_to_mesh_sharding(logical, mesh, list(rules))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Makes `mesh` and `rules` current, so logical constraints inside jit take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield


def describe(shardings: Any) -> dict[str, str]:
  """Flat {param path: partition spec} for printing and tests."""
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  return {jax.tree_util.keystr(path): str(s.spec) for path, s in flat}


def device_memory_per_shard(arrays: Any) -> int:
  """Bytes held by the first device across a pytree of sharded arrays."""
  first = jax.devices()[0]
  total = 0
  for leaf in jax.tree_util.tree_leaves(arrays):
    for shard in leaf.addressable_shards:
      if shard.device == first:
        total += int(np.prod(shard.data.shape)) * shard.data.dtype.itemsize
  return total
