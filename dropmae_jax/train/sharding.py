"""Device mesh and shardings from `config.mesh`.

The batch is split over every mesh axis ('data' and 'fsdp'); parameters and optimizer state are
replicated over 'data' and, when `config.mesh.fsdp > 1`, each large array is split over 'fsdp'
along its largest divisible dimension (ZeRO-3 style; XLA inserts the gathers).
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under fsdp: splitting them saves nothing.
MIN_FSDP_ELEMENTS = 2 ** 16


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh with Auto axes (what Flax linen expects)."""
  devices = list(jax.devices() if devices is None else devices)
  fsdp = int(mesh_config.fsdp)
  data = int(mesh_config.data)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"config.mesh.fsdp={fsdp} must divide the {len(devices)} devices")
  if data < 0:
    data = len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(f"config.mesh.data * config.mesh.fsdp = {data} * {fsdp} must equal the "
                     f"number of devices ({len(devices)}); use data=-1 to fill")
  # jax.sharding.Mesh (unlike jax.make_mesh) defaults to Auto axis types on every jax version.
  return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all devices."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _array_spec(shape: tuple[int, ...], fsdp: int) -> P:
  if fsdp == 1 or int(np.prod(shape)) < MIN_FSDP_ELEMENTS:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """NamedSharding for every leaf of a (shape-only) train state."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _array_spec(tuple(x.shape), fsdp)),
                      abstract_state)


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Per-host numpy batch -> global jax arrays (each host contributes its rows)."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
