"""`config.model.remat`: rematerialised blocks give the same loss and gradients, really remat."""
import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.models import mae

RNGS = {"masking": jax.random.key(1), "asad": jax.random.key(2)}


def tiny_model(remat: bool, **kw) -> mae.DropMAE:
  args = dict(variant="micro/16", img_size=64, decoder_embed_dim=32, decoder_depth=2,
              decoder_num_heads=2, drop_ratio=0.1, asad_impl="reference", remat=remat)
  args.update(kw)
  return mae.DropMAE(**args)


def loss_and_grads(model, params, frames):
  def loss(params):
    out = model.apply({"params": params}, frames, rngs=RNGS)
    return mae.reconstruction_loss(frames, out, model.patch_size)
  return jax.jit(jax.value_and_grad(loss))(params)


def test_remat_gives_the_same_loss_and_gradients():
  # ASAD in the encoder too: both block stacks are rematerialised with their ASAD draws.
  frames = jax.random.normal(jax.random.key(3), (2, 2, 64, 64, 3))
  plain, remat = tiny_model(False, asad_in_encoder=True), tiny_model(True, asad_in_encoder=True)
  params = jax.jit(plain.init)({"params": jax.random.key(0), **RNGS}, frames)["params"]
  # Same parameter tree: remat is a pure execution choice, checkpoints stay interchangeable.
  remat_shapes = jax.eval_shape(remat.init, {"params": jax.random.key(0), **RNGS}, frames)["params"]
  assert jax.tree.structure(remat_shapes) == jax.tree.structure(params)
  loss, grads = loss_and_grads(plain, params, frames)
  remat_loss, remat_grads = loss_and_grads(remat, params, frames)
  assert np.isfinite(float(loss)) and float(loss) > 0
  # ASAD draws its seed from the 'asad' stream inside the block: the recomputed forward must
  # draw the same one (a different one would drop other cells and change the loss).
  np.testing.assert_allclose(float(remat_loss), float(loss), rtol=1e-6)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    r = _at(remat_grads, path)
    np.testing.assert_allclose(np.asarray(r), np.asarray(g), rtol=1e-5,
                               atol=1e-6 * float(np.abs(np.asarray(g)).max() + 1e-12),
                               err_msg=jax.tree_util.keystr(path))


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_remat_puts_checkpoints_in_the_program():
  """The flag must change the program: one checkpoint per block (encoder 2 + decoder 2)."""
  frames = jnp.zeros((1, 2, 64, 64, 3))
  for remat, expected in ((False, 0), (True, 4)):
    model = tiny_model(remat)
    params = jax.eval_shape(model.init, {"params": jax.random.key(0), **RNGS}, frames)["params"]
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, frames, rngs=RNGS).pred)(params)
    count = sum(str(eqn.primitive) in ("checkpoint", "remat", "remat2")
                for eqn in _all_eqns(jaxpr.jaxpr))
    assert count == expected, (remat, count)


def _all_eqns(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in its equations' parameters."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)   # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          yield from _all_eqns(sub)


def test_config_field_reaches_the_model():
  c = configlib.pretrain_defaults()
  assert c.model.remat is False
  c.model.remat = True
  c.asad.impl = "reference"
  assert mae.DropMAE.from_config(c).remat is True
