"""One-shot DropSeg inference (vos/dropseg/inference.py) on a small synthetic example, against the
released flow written out in torch (submit_eval_davis17.py + InferenceCore_ViT: ToTensor +
Normalize, pad_divide_by, the table re-interpolated to the padded grid, one forward per object,
aggregate with keep_bg, unpad, bilinear resize, argmax) on the torch reference network of
test_dropseg_model.py loaded with our export. Micro sizes (configs/dropseg_demo.py)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropmae_jax.config import loading as config_loading
from dropmae_jax.vos.dropseg import inference
from dropmae_jax.vos.dropseg import model as model_lib

from test_dropseg_model import (RefDropSeg, randomize, ref_interpolate_pos_embed_2d,  # noqa: I100
                                ref_pad_divide_by, torch_state)
from test_dropseg_weights import DEMO_REF

HEIGHT, WIDTH = 45, 71          # padded to 48 x 80: 3 rows (1 top, 2 bottom), 9 columns (4, 5)
IDS = (2, 5)                    # object ids of frame 0's annotation (not 1..K on purpose)


def synthetic_sequence(seed=0):
  """Two uint8 frames of a textured background with two objects moving, and frame 0's mask."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:HEIGHT, :WIDTH]
  background = (rng.uniform(0, 255, (HEIGHT, WIDTH, 3)) * 0.5 + 60).astype(np.uint8)
  frames, mask0 = [], None
  for t in range(2):
    img = background.copy()
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    disc = (yy - 20 - 2 * t) ** 2 + (xx - 18 - 3 * t) ** 2 < 10 ** 2
    box = (yy >= 8) & (yy < 30) & (xx >= 44 + 2 * t) & (xx < 60 + 2 * t)
    img[disc] = (230, 40, 40)
    img[box] = (30, 200, 90)
    mask[disc], mask[box] = IDS
    frames.append(img)
    mask0 = mask if t == 0 else mask0
  return frames[0], mask0, frames[1]


def released_flow(ref, frame0, mask0, frame1, out_size):
  """(K+1, h, w) probabilities and the label map, as submit_eval_davis17.py computes them (on a
  copy of `ref`: InferenceCore_ViT replaces the network's tables)."""
  ref = copy.deepcopy(ref)
  norm = lambda f: (torch.from_numpy(f).permute(2, 0, 1).float() / 255 - torch.tensor(   # noqa
      [0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
  rgb = torch.stack([norm(frame0), norm(frame1)])[None]               # (1, T, 3, H, W)
  labels = np.unique(mask0)
  labels = labels[labels != 0]
  msk = torch.from_numpy(np.stack([(mask0 == lab) for lab in labels]).astype(np.float32))[:, None]
  images, pad = ref_pad_divide_by(rgb, 16)
  kh, kw = images.shape[-2] // 16, images.shape[-1] // 16
  two, three = ref_interpolate_pos_embed_2d(ref.pos_embed_two_frame.data, kh, kw)
  ref.pos_embed_two_frame = torch.nn.Parameter(two)
  ref.pos_embed_three_frame = torch.nn.Parameter(three)
  masks, _ = ref_pad_divide_by(msk, 16)                                 # interact()
  out = []
  with torch.no_grad():
    for k in range(len(labels)):
      m16, m8, m4 = ref.backbone(images[:, 0].unsqueeze(1), masks[k].unsqueeze(0).unsqueeze(0),
                                 images[:, 1])
      out.append(ref.segmentation_single_object(m16, m8, m4))
    prob = torch.stack(out, dim=0).flatten(0, 1)                        # (K, 1, Hp, Wp)
    new = torch.cat([torch.prod(1 - prob, dim=0, keepdim=True), prob], 0).clamp(1e-7, 1 - 1e-7)
    prob = F.softmax(torch.log(new / (1 - new)), dim=0)                 # aggregate(keep_bg)
    if pad[2] + pad[3] > 0:                                             # unpad
      prob = prob[:, :, pad[2]:-pad[3], :]
    if pad[0] + pad[1] > 0:
      prob = prob[:, :, :, pad[0]:-pad[1]]
    prob = F.interpolate(prob, out_size, mode="bilinear", align_corners=False)
  return prob[:, 0].numpy(), torch.argmax(prob, dim=0)[0].numpy()


@pytest.fixture(scope="module")
def segmenter():
  config = config_loading.load_config("dropseg_demo")
  model = model_lib.DropSeg.from_config(config)
  variables = randomize(model_lib.variable_shapes(model), seed=11)
  ref = RefDropSeg(**DEMO_REF)
  ref.load_state_dict(torch_state(variables), strict=True)
  return inference.OneShotSegmenter(model, variables), ref.eval()


@pytest.mark.timeout(30)
def test_padding_is_centred_with_the_smaller_half_first():
  assert inference.pad_amounts(HEIGHT, WIDTH) == (1, 2, 4, 5)
  assert inference.pad_amounts(480, 854) == (0, 0, 5, 5)
  assert inference.pad_amounts(480, 864) == (0, 0, 0, 0)
  x = np.arange(HEIGHT * WIDTH * 2, dtype=np.float32).reshape(2, HEIGHT, WIDTH)
  padded, pads = inference.pad_to_multiple(x, axes=(1, 2))
  theirs, pad = ref_pad_divide_by(torch.from_numpy(x), 16)
  assert pad == (4, 5, 1, 2) and pads == (1, 2, 4, 5)
  np.testing.assert_array_equal(padded, theirs.numpy())
  np.testing.assert_array_equal(inference.unpad(padded, pads, axes=(1, 2)), x)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("out_size", [None, (90, 142), (30, 50)])
def test_one_shot_matches_the_released_flow(segmenter, out_size):
  """All objects in one device call; probabilities and labels as the released flow, at the
  frame's size, and resized bilinearly up and down (no antialiasing, as torch)."""
  seg, ref = segmenter
  frame0, mask0, frame1 = synthetic_sequence()
  traces = seg.traces
  result = seg.segment(frame0, mask0, frame1, out_size=out_size)
  size = (HEIGHT, WIDTH) if out_size is None else out_size
  theirs_prob, theirs_index = released_flow(ref, frame0, mask0, frame1, size)
  assert result.probabilities.shape == (3,) + size and result.labels.shape == size
  np.testing.assert_array_equal(result.ids, IDS)
  err = np.abs(result.probabilities - theirs_prob).max()
  print(f"out_size {size}: max abs difference of the probabilities {err:.2e}")
  assert err < 1e-5
  # the released code writes the object's index (1..K); ours writes its id from frame 0's mask
  theirs_labels = np.array((0,) + IDS)[theirs_index]
  top2 = np.sort(theirs_prob, axis=0)[-2:]
  decided = (top2[1] - top2[0]) > 1e-4
  assert decided.mean() > 0.99
  np.testing.assert_array_equal(result.labels[decided], theirs_labels[decided])
  assert len(np.unique(result.labels)) >= 2        # not a degenerate all-one-label map
  assert result.labels.dtype == mask0.dtype
  assert seg.traces == traces + 1                  # one program for both objects
  seg.segment(frame0, mask0, frame1, out_size=out_size)
  assert seg.traces == traces + 1                  # and it is reused


@pytest.mark.timeout(60)
def test_no_object_means_all_background_without_a_call(segmenter):
  seg, _ = segmenter
  frame0, _, frame1 = synthetic_sequence()
  traces = seg.traces
  result = seg.segment(frame0, np.zeros((HEIGHT, WIDTH), np.uint8), frame1)
  assert not result.labels.any() and result.ids.size == 0 and seg.traces == traces
  with pytest.raises(ValueError, match="must be"):
    seg.segment(frame0[:40], np.zeros((HEIGHT, WIDTH), np.uint8), frame1)
