"""The configs of `python -m dropmae_jax.main --config=NAME`, installed as `dropmae_jax.configs`.

Each file defines `get_config()`; see `dropmae_jax/config/loading.py` for how names are found.
"""
