"""Test-wide setup: 8 fake CPU devices for the sharding tests, absl flags parsed for grain."""
import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

# grain's multiprocess prefetch reads an absl flag; outside app.run the flags are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
