"""Checkpoint fingerprints: exact, sharding-independent sums of a state's raw bits, checked on
every restore (`checkpoint.Checkpointer`) and by readers outside a run (`convert.io`).
"""
from __future__ import annotations

import json
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The key of a checkpoint's `meta` holding the fingerprint; stripped from the meta that
# `Checkpointer.restore` returns.
FINGERPRINT_KEY = "_fingerprint"


def path_str(path: tuple) -> str:
  """'params/blocks_0/attn/qkv/kernel' for a pytree path.

  Dict keys, attribute names and sequence indices all become plain names, because orbax stores
  a flax struct / namedtuple as a dict and reads tuples back as lists.
  """
  parts = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


# Per leaf, two sums of the raw bits read as uint32 words, modulo 2**32: s1 = Σ w_i and
# s2 = Σ w_i·(2654435761·i + 1) (i = the word's index in the flattened leaf). Integer addition
# modulo 2**32 is associative and commutative, so the sums are exact and do not depend on the
# summation order, hence not on the mesh or sharding that wrote or restores the arrays; a
# restore onto another mesh matches bit for bit. Flipping bit k of one word changes s1 by ±2**k,
# never 0 modulo 2**32, so every single bit flip is detected; s2 weighs words by position, so
# swapped or shifted blocks and most multi-bit damage are caught too.

_MIX = np.uint32(2654435761)  # Knuth's multiplicative hash constant (odd)


def _words(x: jax.Array) -> jax.Array:
  """The leaf's raw bits as a flat uint32 vector (16/8-bit dtypes widened, 64-bit split)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).reshape(-1)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)


@jax.jit
def _leaf_sums(leaves: list[jax.Array]) -> jax.Array:
  """(num_leaves, 2) uint32: [s1, s2] per leaf (see above)."""
  rows = []
  for x in leaves:
    w = _words(x)
    weight = jax.lax.iota(jnp.uint32, w.size) * _MIX + jnp.uint32(1)
    rows.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * weight, dtype=jnp.uint32)]))
  if not rows:
    return jnp.zeros((0, 2), jnp.uint32)
  return jnp.stack(rows)


def state_fingerprint(state: Any) -> dict[str, list]:
  """{leaf path: [shape, dtype name, s1, s2]} of a pytree of arrays.

  One jitted reduction over the state (it reads each array once, like the copy a save makes)
  and one small fetch; exact and independent of sharding (see the comment above).
  """
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  leaves = [x if isinstance(x, jax.Array) else jnp.asarray(x) for _, x in flat]
  # One jitted call per set of devices (a jitted call takes arrays of one device set; the state
  # may mix, e.g. a step counter on one device and sharded params on the mesh).
  groups: dict[frozenset, list[int]] = {}
  for i, x in enumerate(leaves):
    groups.setdefault(frozenset(d.id for d in x.sharding.device_set), []).append(i)
  per_group = jax.device_get([_leaf_sums([leaves[i] for i in members])
                              for members in groups.values()])
  sums: list[Any] = [None] * len(leaves)
  for members, rows in zip(groups.values(), per_group):
    for i, row in zip(members, np.asarray(rows)):
      sums[i] = row
  return {path_str(p): [list(x.shape), str(x.dtype), int(s[0]), int(s[1])]
          for (p, _), x, s in zip(flat, leaves, sums)}


def arrays_problem(state: Any, recorded: dict[str, list]) -> str | None:
  """Why restored arrays differ from their fingerprint's record, or None."""
  got = state_fingerprint(state)
  # A leaf cast to another dtype on restore (dtypes are cast) has other bits: not comparable.
  bad = sorted(k for k, v in recorded.items()
               if k in got and got[k][1] == v[1] and got[k][2:] != v[2:])
  if bad:
    return f"{len(bad)} array(s) fail the fingerprint, e.g. {', '.join(bad[:3])}"
  return None


def fingerprint_problem(state: Any, meta: dict) -> str | None:
  """Why a checkpoint read as saved — its state pytree and its JSON meta with the fingerprint
  still in it — fails that fingerprint, or None (also when it was written without one). For
  readers outside a run (`convert.io.load_params`); `Checkpointer.restore` checks the same."""
  meta = dict(meta)
  fingerprint = meta.pop(FINGERPRINT_KEY, None)
  if fingerprint is None:
    return None
  if canonical_crc(meta) != fingerprint.get("meta"):
    return "its meta (counters, config) fails the fingerprint"
  return arrays_problem(state, fingerprint["state"])


def canonical_crc(value: Any) -> int:
  """CRC32 of a JSON value written with sorted keys (what a round trip through JSON keeps)."""
  return zlib.crc32(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def data_state_crc(state: Any) -> int:
  """CRC of a grain iterator state: a dict (DatasetIterator) or JSON bytes (DataLoader)."""
  if isinstance(state, (bytes, str)):
    try:
      state = json.loads(state)
    except ValueError:
      return zlib.crc32(state.encode() if isinstance(state, str) else state)
  return canonical_crc(json.loads(json.dumps(state)))  # tuples -> lists, as on disk
