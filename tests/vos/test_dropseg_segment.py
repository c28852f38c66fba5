"""DropSeg over whole sequences: chunked inference, `vos segment` (DAVIS-2017 / 2016, YouTube-VOS),
the weights it takes and refuses, `vos video`, and every bad input as one line (exit 2) with
nothing written. Micro model (configs/dropseg_demo.py) with random weights; the synthetic DAVIS
set at 96x64 and hand-written YouTube-VOS / video fixtures."""
import copy
import json
import os
import shutil
import zipfile

import av
import numpy as np
import pytest
import torch
from PIL import Image

from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io as convert_io
from dropmae_jax.convert.__main__ import main as convert_main
from dropmae_jax.data import images
from dropmae_jax.track import ostrack
from dropmae_jax.train.checkpoint import manager
from dropmae_jax.track.__main__ import main as track_main
from dropmae_jax.vos import davis
from dropmae_jax.vos import synthetic
from dropmae_jax.vos.__main__ import main as vos_main
from dropmae_jax.vos.dropseg import inference
from dropmae_jax.vos.dropseg import model as model_lib
from dropmae_jax.vos.dropseg import weights

from test_dropseg_model import randomize  # noqa: I100

SIZE = (96, 64)          # synthetic frames: width x height
FRAMES = 16


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The demo segmenter (random weights) as an imported folder, its .pth, a resume file, a
  workdir export; the synthetic DAVIS set; a tracker .pth.tar and folder."""
  root = tmp_path_factory.mktemp("seg")
  config = config_loading.load_config("dropseg_demo")
  model = model_lib.DropSeg.from_config(config)
  variables = randomize(model_lib.variable_shapes(model), seed=5)
  imported = str(root / "imported")
  weights.save_segmenter(imported, variables, config)
  pth = str(root / "seg_210000.pth")
  assert convert_main(["export-segmenter", imported, "--out", pth]) == 0
  resume = str(root / "seg_checkpoint.pth")
  torch.save({"it": 7, "network": torch.load(pth, weights_only=True), "optimizer": {}}, resume)
  workdir = root / "workdir"
  weights.save_segmenter(str(workdir / "segmenter_weights"), variables, config)
  checkpoint = str(root / "ckpt_workdir")        # a run's checkpoint, no export yet
  _save_checkpoint(checkpoint, variables, config)
  droptrack_run = str(root / "droptrack_run")    # another task's run
  with config.unlocked():
    other = copy.deepcopy(config)
    other.task = "droptrack"
  _save_checkpoint(droptrack_run, variables, other)
  dataset = str(root / "DAVIS")
  synthetic.make_dataset(dataset, val=2, frames=FRAMES, size=SIZE, progress=False)
  track_config = config_loading.load_config("droptrack_demo")
  tracker = str(root / "tracker")
  convert_io.save_tracker(tracker, ostrack.init_variables(
      ostrack.OSTrackCE.from_config(track_config), seed=0), track_config)
  tracker_pth = str(root / "tracker.pth.tar")
  assert convert_main(["export-tracker", tracker, "--out", tracker_pth]) == 0
  return dict(root=root, model=model, variables=variables, imported=imported, pth=pth,
              resume=resume, workdir=str(workdir), davis=dataset, tracker=tracker,
              tracker_pth=tracker_pth, checkpoint=checkpoint, droptrack_run=droptrack_run)


def _save_checkpoint(workdir, variables, config):
  """WORKDIR/checkpoints/<step> as the trainer writes it: the train state (params, frozen,
  optimiser state, step, run key) and the meta with the run's config."""
  state = {"step": np.int32(30), "params": variables["params"],
           model_lib.FROZEN: variables[model_lib.FROZEN],
           "opt_state": {"count": np.int32(30)}, "rng": np.zeros(2, np.uint32)}
  checkpointer = manager.Checkpointer(workdir, keep=1, async_save=False)
  checkpointer.save(30, state, meta={"config": config.to_json_best_effort()})
  checkpointer.close()


def _names(env):
  return davis.read_sequence_list(os.path.join(env["davis"], "ImageSets", "2017", "val.txt"))


def _ann(env, seq, frame="00000"):
  return davis.read_ids_png(os.path.join(env["davis"], "Annotations", "480p", seq,
                                         f"{frame}.png"))


def _frames(env, seq):
  ds = davis.DavisDataset(env["davis"], sequences=[seq])
  return ds.read_frames(ds.sequence(seq))


@pytest.mark.timeout(120)
def test_chunked_sequence_equals_the_per_frame_call(env):
  seq = _names(env)[0]
  frames, first = _frames(env, seq), _ann(env, seq)
  one = inference.OneShotSegmenter(env["model"], env["variables"])
  singles = [one.segment(frames[0], first, f) for f in frames[1:]]
  chunked = inference.OneShotSegmenter(env["model"], env["variables"], chunk=4)
  traces = chunked.traces
  result = inference.segment_sequence(chunked, frames, first)   # 15 queries: last chunk of 3
  assert chunked.traces == traces + 1                            # one program, padded chunk
  np.testing.assert_array_equal(result[0], first)
  # XLA sums a 4x larger batch in another order: float32 round-off may flip exact near-ties
  # only. Every pixel whose top two probabilities differ by more than 1e-4 agrees.
  per_frame = np.stack([s.labels for s in singles])
  top2 = np.sort(np.stack([s.probabilities for s in singles]), axis=1)[:, -2:]
  decided = top2[:, 1] - top2[:, 0] > 1e-4
  assert decided.mean() > 0.99
  np.testing.assert_array_equal(result[1:][decided], per_frame[decided])
  assert (result[1:] != per_frame).mean() < 1e-3
  assert len(np.unique(result[1:])) >= 3                         # not a degenerate map
  # the probabilities themselves, from the chunked program
  masks = first[None] == np.array([1, 2])[:, None, None]
  _, prob = chunked.dispatch(frames[:1], np.zeros(2), masks, frames[1:5], np.ones((4, 2)),
                             first.shape)
  err = np.abs(np.asarray(prob) - np.stack([s.probabilities for s in singles[:4]])).max()
  assert err < 1e-5, err


def _run(argv, capsys):
  code = vos_main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


@pytest.mark.timeout(150)
def test_segment_davis2017_writes_scores_and_keeps_finished(env, capsys, tmp_path):
  out = str(tmp_path / "res")
  code, printed, _ = _run(["segment", "--weights", env["imported"], "--root", env["davis"],
                           "--out", out, "--quiet"], capsys)
  assert code == 0
  assert "J&F" in printed and "imported segmenter" in printed
  for seq in _names(env):
    files = sorted(os.listdir(os.path.join(out, seq)))
    assert files == [f"{t:05d}.png" for t in range(FRAMES)]
    with Image.open(os.path.join(out, seq, "00003.png")) as image:
      assert image.mode == "P"
      np.testing.assert_array_equal(np.array(image.getpalette()).reshape(-1, 3)[:256],
                                    davis.DAVIS_PALETTE)
    np.testing.assert_array_equal(davis.read_ids_png(os.path.join(out, seq, "00000.png")),
                                  _ann(env, seq))
  # The same PNGs from the weights in every other form, the config from the weights.
  first = _names(env)[0]
  reference = davis.read_ids_png(os.path.join(out, first, "00009.png"))
  for form in ("pth", "resume", "workdir", "checkpoint"):
    other = str(tmp_path / form)
    code, printed, err = _run(["segment", "--weights", env[form], "--root", env["davis"], "--out",
                               other, "--sequences", first, "--no-evaluate", "--quiet",
                               "--chunk", "3"], capsys)
    assert code == 0, err
    assert {"checkpoint": "checkpoint step 30", "workdir": "run's export",
            "resume": "released DropSeg"}.get(form, "") in printed
    np.testing.assert_array_equal(davis.read_ids_png(os.path.join(other, first, "00009.png")),
                                  reference)
  # Finished sequences are kept; --overwrite redoes them.
  stamp = os.path.getmtime(os.path.join(out, first, "00005.png"))
  code, printed, _ = _run(["segment", "--weights", env["imported"], "--root", env["davis"],
                           "--out", out, "--quiet", "--no-evaluate"], capsys)
  assert code == 0 and "2 of 2 sequences already have results" in printed
  assert os.path.getmtime(os.path.join(out, first, "00005.png")) == stamp
  code, printed, _ = _run(["segment", "--weights", env["imported"], "--root", env["davis"],
                           "--out", out, "--quiet", "--no-evaluate", "--overwrite",
                           "--sequences", first], capsys)
  assert code == 0 and "segmented 1 sequence(s)" in printed
  assert os.path.getmtime(os.path.join(out, first, "00005.png")) != stamp


@pytest.mark.timeout(120)
def test_segment_davis2016_writes_0_255(env, capsys, tmp_path):
  out = str(tmp_path / "res16")
  code, printed, err = _run(["segment", "--weights", env["imported"], "--root", env["davis"],
                             "--out", out, "--year", "2016", "--quiet"], capsys)
  assert code == 0, err
  assert "J&F" in printed
  seq = _names(env)[0]
  values = set()
  for t in range(FRAMES):
    values |= set(np.unique(davis.read_ids_png(os.path.join(out, seq, f"{t:05d}.png"))).tolist())
  assert values <= {0, 255} and 255 in values
  np.testing.assert_array_equal(davis.read_ids_png(os.path.join(out, seq, "00000.png")),
                                (_ann(env, seq) > 0) * 255)


def _youtube(env, root):
  """One video, frames named 00000, 00005, ... (every 5th), object 1 from frame 0 and object 3
  from the third frame on; plus a two-frame second video."""
  seq = _names(env)[0]
  frames = _frames(env, seq)
  ann = _ann(env, seq)
  stems = [f"{5 * t:05d}" for t in range(6)]
  meta = {"videos": {"vid": {"objects": {"1": {"category": "a", "frames": stems},
                                         "3": {"category": "b", "frames": stems[2:]}}},
                     "two": {"objects": {"2": {"category": "c", "frames": stems[:2]}}}}}
  for video, count in (("vid", 6), ("two", 2)):
    os.makedirs(root / "JPEGImages" / video)
    os.makedirs(root / "Annotations" / video)
    for t in range(count):
      Image.fromarray(frames[t]).save(root / "JPEGImages" / video / f"{stems[t]}.jpg",
                                      quality=95)
  late = np.where(_ann(env, seq, "00002") == 2, 3, 0).astype(np.uint8)
  davis.write_palette_png(str(root / "Annotations" / "vid" / "00000.png"),
                          np.where(ann == 1, 1, 0).astype(np.uint8))
  davis.write_palette_png(str(root / "Annotations" / "vid" / "00010.png"), late)
  davis.write_palette_png(str(root / "Annotations" / "two" / "00000.png"),
                          np.where(ann > 0, 2, 0).astype(np.uint8))
  with open(root / "meta.json", "w") as f:
    json.dump(meta, f)
  return stems, ann, late


@pytest.mark.timeout(120)
def test_segment_youtube_late_objects_and_submission(env, capsys, tmp_path):
  root = tmp_path / "valid"
  stems, ann, late = _youtube(env, root)
  out = tmp_path / "yv"
  code, printed, err = _run(["segment", "--weights", env["pth"], "--root", str(root), "--out",
                             str(out), "--quiet", "--chunk", "2"], capsys)   # padded last chunk
  assert code == 0, err
  results = out / "Annotations" / "vid"
  assert sorted(os.listdir(results)) == [f"{s}.png" for s in stems]
  got = [davis.read_ids_png(str(results / f"{s}.png")) for s in stems]
  np.testing.assert_array_equal(got[0], np.where(ann == 1, 1, 0))
  assert not (got[0] == 3).any() and not (got[1] == 3).any()     # absent before it appears
  np.testing.assert_array_equal(got[2] == 3, late == 3)           # its annotation on its frame
  assert set(np.unique(np.stack(got)).tolist()) <= {0, 1, 3}
  # frames after object 3 appears: object 1 still predicted from frame 0 with the same memory
  seg = inference.OneShotSegmenter(env["model"], env["variables"])
  frames = [images.read_rgb(str(root / "JPEGImages" / "vid" / f"{s}.jpg")) for s in stems]
  alone = seg.segment(frames[0], np.where(ann == 1, 1, 0).astype(np.uint8), frames[1])
  decided = np.abs(alone.probabilities[1] - alone.probabilities[0]) > 1e-4   # (round-off ties)
  assert decided.mean() > 0.99 and alone.labels.any()
  np.testing.assert_array_equal(got[1][decided], alone.labels[decided])   # only object 1 there
  with zipfile.ZipFile(out / "submission.zip") as archive:
    names = sorted(archive.namelist())
  assert names == sorted([f"Annotations/vid/{s}.png" for s in stems]
                         + [f"Annotations/two/{s}.png" for s in stems[:2]])
  assert "submission.zip" in printed


def _copy(env, tmp_path):
  root = tmp_path / "DAVIS"
  shutil.copytree(env["davis"], root)
  return root, _names(env)[0]


def _refused(argv, capsys, *needles):
  code, _, err = _run(argv, capsys)
  assert code == 2, err
  lines = [line for line in err.strip().splitlines() if line]
  assert len(lines) == 1, err
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


@pytest.mark.timeout(120)
def test_bad_davis_input_is_one_line_and_writes_nothing(env, capsys, tmp_path):
  root, seq = _copy(env, tmp_path)
  ann_dir = root / "Annotations" / "480p" / seq
  ann = _ann(env, seq)
  out = tmp_path / "out"
  argv = ["segment", "--weights", env["imported"], "--root", str(root), "--out", str(out),
          "--sequences", seq, "--quiet"]
  davis.write_palette_png(str(ann_dir / "00000.png"), np.zeros_like(ann))
  _refused(argv, capsys, seq, "00000", "no object")
  davis.write_palette_png(str(ann_dir / "00000.png"), np.where(ann > 0, 3, 0).astype(np.uint8))
  davis.write_palette_png(str(ann_dir / "00000.png"),
                          np.where(ann == 1, 1, np.where(ann == 2, 3, 0)).astype(np.uint8))
  _refused(argv, capsys, seq, "00000", "1..")
  davis.write_palette_png(str(ann_dir / "00000.png"), ann[:, :-8])
  _refused(argv, capsys, seq, "00000", "annotation is")
  davis.write_palette_png(str(ann_dir / "00000.png"), ann)
  with open(root / "JPEGImages" / "480p" / seq / "00007.jpg", "wb") as f:
    f.write(b"not a jpeg")
  _refused(argv, capsys, "00007.jpg")
  assert not out.exists()                                   # nothing half-written
  # void (255) is background, not an object
  shutil.copy(os.path.join(env["davis"], "JPEGImages", "480p", seq, "00007.jpg"),
              root / "JPEGImages" / "480p" / seq / "00007.jpg")
  void = ann.copy()
  void[:4] = 255
  davis.write_palette_png(str(ann_dir / "00000.png"), void)
  code, _, err = _run(argv + ["--no-evaluate"], capsys)
  assert code == 0, err
  first = davis.read_ids_png(str(out / seq / "00000.png"))
  assert not first[:4].any() and np.array_equal(first[4:], ann[4:])
  # a one-frame sequence
  for t in range(1, FRAMES):
    os.remove(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg")
  _refused(argv + ["--overwrite"], capsys, seq, "at least 2")


@pytest.mark.timeout(120)
def test_wrong_weights_are_refused_both_ways(env, capsys, tmp_path):
  out = tmp_path / "out"
  base = ["segment", "--root", env["davis"], "--out", str(out), "--quiet", "--weights"]
  _refused(base + [env["tracker_pth"]], capsys, env["tracker_pth"], "DropTrack")
  _refused(base + [env["tracker"]], capsys, env["tracker"], "tracker")
  mae = str(tmp_path / "mae.pth")
  state = {k: v for k, v in torch.load(env["pth"], weights_only=True).items()
           if k.startswith(("patch_embed.", "blocks.", "norm.", "pos_embed", "cls_token"))}
  torch.save({"model": state}, mae)
  _refused(base + [mae], capsys, mae, "pre-training")
  _refused(base + [env["droptrack_run"]], capsys, env["droptrack_run"], "'droptrack' run")
  _refused(base + [env["imported"], "--config", "dropseg_davis_ytvos"], capsys,
           "dropseg_davis_ytvos", "micro")
  assert not out.exists()
  # a segmenter given to the tracker
  for weights_path in (env["imported"], env["workdir"], env["pth"], env["resume"]):
    code = track_main(["run", "--weights", weights_path, "--benchmark", "got10k", "--root",
                       str(tmp_path), "--split", "val", "--out", str(tmp_path / "trk")])
    err = capsys.readouterr().err
    assert code == 2 and "DropSeg segmenter" in err and weights_path in err, err
  assert not (tmp_path / "trk").exists()
  # unknown flags get the nearest one
  with pytest.raises(SystemExit) as e:
    vos_main(["segment", "--weights", env["imported"], "--root", env["davis"], "--out",
              str(out), "--overwrte"])
  assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err


def _write_mp4(path, frames):
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    stream.options = {"crf": "10"}
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _decode(path):
  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.timeout(150)
def test_vos_video_segmenter_and_propagation(env, capsys, tmp_path):
  seq = _names(env)[0]
  frames = _frames(env, seq)[:10]
  video = tmp_path / "in.mp4"
  _write_mp4(video, frames)
  mask = tmp_path / "first.png"
  ann = _ann(env, seq)
  davis.write_palette_png(str(mask), ann)
  decoded_in = _decode(video)
  small_input = ["--config.vos.short_side=64", "--config.vos.size_multiple=16"]
  for weights_spec, kind, extra in ((env["imported"], "DropSeg", []),
                                    ("random:demo", "label propagation", small_input)):
    out = tmp_path / f"out_{kind[:4]}.mp4"
    code, printed, err = _run(["video", "--weights", weights_spec, "--video", str(video),
                               "--mask", str(mask), "--out", str(out), "--quiet"] + extra, capsys)
    assert code == 0, err
    assert kind in printed
    decoded = _decode(out)
    assert decoded.shape == (10,) + frames.shape[1:]
    change = np.abs(decoded[0].astype(int) - decoded_in[0]).sum(-1)
    inside, outside = change[ann > 0].mean(), change[ann == 0].mean()
    assert inside > 40 and outside < 15, (inside, outside)       # frame 0: the mask drawn
    colour = davis.DAVIS_PALETTE[1].astype(int)                    # object 1: dark red
    blend = (decoded_in[0][ann == 1].astype(int) + colour) / 2
    assert np.abs(decoded[0][ann == 1].mean(0) - blend.mean(0)).max() < 20
  # bad input: nothing written
  out = tmp_path / "bad.mp4"
  argv = ["video", "--weights", env["imported"], "--video", str(video), "--out", str(out)]
  small = tmp_path / "small.png"
  davis.write_palette_png(str(small), ann[:, :-16])
  _refused(argv + ["--mask", str(small)], capsys, str(small), "frame 0")
  empty = tmp_path / "empty.png"
  davis.write_palette_png(str(empty), np.where(ann > 0, 255, 0).astype(np.uint8))
  _refused(argv + ["--mask", str(empty)], capsys, str(empty), "no object")
  short = tmp_path / "short.mp4"
  _write_mp4(short, frames[:1])
  _refused(["video", "--weights", env["imported"], "--video", str(short), "--mask", str(mask),
            "--out", str(out)], capsys, str(short), "at least 2")
  _refused(["video", "--weights", env["tracker"], "--video", str(video), "--mask", str(mask),
            "--out", str(out)], capsys, env["tracker"])
  assert not out.exists() and not list(tmp_path.glob("bad*"))


@pytest.mark.timeout(120)
def test_bad_youtube_input_is_one_line_and_writes_nothing(env, capsys, tmp_path):
  """YouTube-VOS folders: a malformed meta.json, an annotation of another size than its frame,
  meta.json naming a first frame whose annotation lacks the object, a video whose annotations
  hold no object, a one-frame video: one line naming the file / video and frame, exit 2, no
  --out left behind."""
  root = tmp_path / "valid"
  stems, ann, late = _youtube(env, root)
  out = tmp_path / "yv"
  argv = ["segment", "--weights", env["imported"], "--root", str(root), "--out", str(out),
          "--quiet", "--sequences", "vid"]
  meta_path = root / "meta.json"
  meta = meta_path.read_text()
  meta_path.write_text("{not json")
  _refused(argv, capsys, "meta.json")
  meta_path.write_text(meta)
  late_png = str(root / "Annotations" / "vid" / f"{stems[2]}.png")
  davis.write_palette_png(late_png, late[:, :-8])
  _refused(argv, capsys, "vid", stems[2], "the frame")
  davis.write_palette_png(late_png, np.where(late > 0, 4, 0).astype(np.uint8))
  _refused(argv, capsys, "vid", stems[2], "object 3")
  davis.write_palette_png(late_png, late)
  first_png = str(root / "Annotations" / "vid" / f"{stems[0]}.png")
  os.remove(late_png)
  davis.write_palette_png(first_png, np.zeros_like(ann))
  _refused(argv, capsys, "vid", "no annotation")
  assert not out.exists()
  # a video of one frame
  davis.write_palette_png(first_png, np.where(ann == 1, 1, 0).astype(np.uint8))
  davis.write_palette_png(late_png, late)
  for s in stems[1:]:
    os.remove(root / "JPEGImages" / "vid" / f"{s}.jpg")
  os.remove(late_png)
  with open(meta_path, "w") as f:
    json.dump({"videos": {"vid": {"objects": {"1": {"category": "a", "frames": stems[:1]}}}}}, f)
  _refused(argv, capsys, "vid", "at least 2")
  assert not out.exists()
