"""Orbax checkpoints of (train state, grain iterator state, JSON meta) under WORKDIR/checkpoints.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. `state` is any pytree of arrays (the
TrainState: params, opt_state, int32 step, uint32 raw key data); `data` is grain's per-process
iterator state; `meta` is a JSON dict (counters, the config) plus a fingerprint of the other two,
checked after every restore.

Modules: manager.py (the Checkpointer: orbax saves, restores, fallback, quarantine), restore.py
(restore targets and the checked read of one step: damaged vs config mismatch), disk.py (the cause
of a save that could not be written), errors.py (the exceptions). This package exposes the API.

Faults (see `Checkpointer.restore_newest_good`): a checkpoint that cannot be read or fails its
fingerprint is damaged; it is moved aside to WORKDIR/checkpoints/corrupt-<step> (never deleted;
orbax only lists all-digit names, so it neither restores nor counts it) and the next older one is
tried. A checkpoint that reads fine but does not fit this run's train state is a config mismatch,
not damage: it stays where it is and the run stops with a CheckpointError. A save that cannot be
written (disk full, read-only) stops the run with a CheckpointError naming the directory; old
checkpoints are only deleted (keep-last-N) after a newer one is known to be complete.
"""
from dropmae_jax.train.checkpoint.errors import (CheckpointError, CheckpointWriteError,
                                                 DamagedCheckpointError)
from dropmae_jax.train.checkpoint.manager import QUARANTINE_PREFIX, Checkpointer
from dropmae_jax.train.checkpoint.restore import abstract_like, describe_mismatch

__all__ = ["CheckpointError", "CheckpointWriteError", "Checkpointer", "DamagedCheckpointError",
           "QUARANTINE_PREFIX", "abstract_like", "describe_mismatch"]
