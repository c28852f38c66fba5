"""DropTrack weights across the JAX / PyTorch border: the `convert import-tracker` and
`convert export-tracker` subcommands (python -m dropmae_jax.convert).

A released DropTrack / OSTrack-CE checkpoint ({'net': state_dict}) becomes an imported tracker
folder (orbax params + batch_stats + config.json) and back; the key mapping is `track/layout.py`.
"""
from __future__ import annotations

import numpy as np

from dropmae_jax.config import loading as config_loading
from dropmae_jax.config import defaults as configlib
from dropmae_jax.convert import io
from dropmae_jax.track import layout as tracker_layout
from dropmae_jax.track import ostrack


def run_import_tracker(src: str, out: str, config_path: str | None) -> list[str]:
  state = io.read_torch_state_dict(src)
  tracker_layout.check_is_tracker(state)
  if config_path:
    config = config_loading.load_config(config_path)
  else:
    config = configlib.droptrack_defaults()
    patch = int(config.model.variant.split("/")[1])
    for name, value in tracker_layout.infer_sizes(state, patch).items():
      config.model[name] = value
  model = ostrack.OSTrackCE.from_config(config)
  variables, report = tracker_layout.state_dict_to_variables(
      state, ostrack.variable_shapes(model),
      fresh=lambda: ostrack.init_variables(model, seed=config.seed))
  io.save_tracker(out, variables, config)
  m = config.model
  return [f"tracker {m.variant} template {m.template_size}px search {m.search_size}px, CE "
          f"{tuple(m.ce_loc)} keep {m.ce_keep_ratio}, head {m.head_channels}"] + report + [
              f"wrote {out}"]


def run_export_tracker(src: str, out: str) -> list[str]:
  variables, _ = io.load_tracker(src)
  state = tracker_layout.variables_to_state_dict(variables)
  io.write_tracker_checkpoint(state, out)
  return [f"wrote {len(state)} tensors ({sum(np.size(v) for v in state.values()):,} values) "
          f"to {out}"]
