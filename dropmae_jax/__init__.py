"""DropMAE in JAX/Flax."""
