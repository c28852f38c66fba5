"""Released checkpoints as they are actually saved, read without running pickled code.

The files are built here in each released layout: MAE's `save_model` (jimmy-dq/DropMAE
`util/misc.py`: {'model', 'optimizer', 'epoch', 'scaler', 'args'} with an argparse.Namespace)
and OSTrack's trainer (jimmy-dq/DropTrack `lib/train/trainers/base_trainer.py`: {'epoch',
'actor_type', 'net_type', 'net', 'net_info', 'constructor', 'optimizer', 'stats', 'settings'} with
objects of `lib.train.admin` classes), in the zip format and the legacy (PyTorch < 1.6) one, and
files whose pickles would run code if their globals were imported or called."""
import argparse
import collections
import os
import pickle
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert import torch_pickle
from dropmae_jax.convert.__main__ import main as convert_main
from dropmae_jax.track import layout as tracker_layout
from dropmae_jax.track import ostrack

from test_convert import GRID, fresh_params, randomized, tiny_config  # noqa: I100
from test_ostrack import randomize, small_config

FORMATS = {"zip": True, "legacy": False}   # torch.save's _use_new_zipfile_serialization


def adamw_state(n=2, seed=0):
  """A real optimizer state dict (tensors in per-parameter state, plain param_groups)."""
  gen = torch.Generator().manual_seed(seed)
  params = [torch.nn.Parameter(torch.randn(3, generator=gen)) for _ in range(n)]
  opt = torch.optim.AdamW(params, lr=1.5e-4)
  for p in params:
    p.grad = torch.ones_like(p)
  opt.step()
  return opt.state_dict()


def mae_checkpoint(state):
  """MAE's misc.save_model: to_save = {'model', 'optimizer', 'epoch', 'scaler', 'args'}."""
  args = argparse.Namespace(model="mae_vit_base_patch16", batch_size=64, mask_ratio=0.75,
                            blr=1.5e-4, output_dir="./output_dir", device="cuda", epochs=800,
                            num_frames=2, P=0.1, world_size=64, dist_url="env://")
  return {"model": collections.OrderedDict((k, torch.from_numpy(np.array(v)))
                                           for k, v in state.items()),
          "optimizer": adamw_state(),
          "epoch": 799,
          "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                     "growth_interval": 2000, "_growth_tracker": 1234},
          "args": args}


@pytest.fixture(scope="module")
def mae_state():
  return layout.params_to_state_dict(randomized(fresh_params(tiny_config()), seed=11), grid=GRID)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mae_save_model_file_imports(mae_state, tmp_path, capsys, fmt):
  path = str(tmp_path / "checkpoint-799.pth")
  torch.save(mae_checkpoint(mae_state), path, _use_new_zipfile_serialization=FORMATS[fmt])
  with pytest.raises(Exception, match="argparse.Namespace"):   # what the import used to do
    torch.load(path, weights_only=True)
  assert convert_main(["import", path, "--out", str(tmp_path / "imp")]) == 0
  out = capsys.readouterr().out
  ignored = [line for line in out.splitlines() if line.startswith("ignored")]
  assert ignored == ["ignored non-tensor entries: args (argparse.Namespace); also not imported: "
                     "optimizer, epoch, scaler"], out
  params, _ = io.load_params(str(tmp_path / "imp"))
  back = layout.params_to_state_dict(params, grid=GRID)
  for k, v in mae_state.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


class _FakeModules:
  """Modules named like OSTrack's `lib.train.admin.*`, present only while the file is saved
  (as on the machine that trained it); the test then proves they are never imported."""

  NAMES = ("lib", "lib.train", "lib.train.admin", "lib.train.admin.settings",
           "lib.train.admin.stats", "lib.train.admin.environment", "easydict")

  def __init__(self, monkeypatch):
    mods = {n: types.ModuleType(n) for n in self.NAMES}

    class Settings:   # lib/train/admin/settings.py
      def __init__(self):
        self.set_default()

      def set_default(self):
        self.env = mods["lib.train.admin.environment"].EnvSettings()
        self.use_gpu = True

    class EnvSettings:
      def __init__(self):
        self.workspace_dir = "/home/user/DropTrack"
        self.got10k_dir = "/data/got10k/train"

    class AverageMeter:   # lib/train/admin/stats.py
      def __init__(self):
        self.val, self.avg, self.sum, self.count = 0.31, 0.42, 42.0, 100

    class EasyDict(dict):   # the cfg object: a dict subclass with attributes
      pass

    for cls, module in ((Settings, "lib.train.admin.settings"), (AverageMeter, "lib.train.admin.stats"),
                        (EnvSettings, "lib.train.admin.environment"), (EasyDict, "easydict")):
      cls.__module__, cls.__qualname__ = module, cls.__name__
      setattr(mods[module], cls.__name__, cls)
    self.mods, self.monkeypatch = mods, monkeypatch

  def __enter__(self):
    self.context = self.monkeypatch.context()
    m = self.context.__enter__()
    for name, module in self.mods.items():
      m.setitem(sys.modules, name, module)
    return self.mods

  def __exit__(self, *exc):
    self.context.__exit__(*exc)


def ostrack_checkpoint(net_state, mods):
  settings = mods["lib.train.admin.settings"].Settings()
  cfg = mods["easydict"].EasyDict(MODEL={"BACKBONE": {"CE_LOC": [3, 6, 9]}})
  cfg.extra = "attribute"
  settings.cfg = cfg
  meter = mods["lib.train.admin.stats"].AverageMeter
  stats = collections.OrderedDict(train=collections.OrderedDict(
      [("Loss/total", meter()), ("IoU", meter())]))
  return {"epoch": 100, "actor_type": "OSTrackActor", "net_type": "OSTrack",
          "net": collections.OrderedDict((k, torch.from_numpy(np.array(v)))
                                         for k, v in net_state.items()),
          "net_info": None, "constructor": None, "optimizer": adamw_state(seed=1),
          "stats": stats, "settings": settings}


@pytest.fixture(scope="module")
def tracker_variables():
  model = ostrack.OSTrackCE.from_config(small_config())
  return randomize(ostrack.variable_shapes(model), seed=21)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_ostrack_trainer_file_imports(tracker_variables, tmp_path, capsys, monkeypatch, fmt):
  state = tracker_layout.variables_to_state_dict(tracker_variables)
  path = str(tmp_path / "OSTrack_ep0100.pth.tar")
  with _FakeModules(monkeypatch) as mods:
    torch.save(ostrack_checkpoint(state, mods), path,
               _use_new_zipfile_serialization=FORMATS[fmt])
  assert not any(name in sys.modules for name in _FakeModules.NAMES)
  with pytest.raises(Exception, match="Unsupported global"):
    torch.load(path, weights_only=True)
  config = tmp_path / "cfg.py"
  from test_ostrack import CONFIG_SOURCE
  config.write_text(CONFIG_SOURCE)
  out = tmp_path / "imp"
  assert convert_main(["import-tracker", path, "--out", str(out), "--config", str(config)]) == 0
  printed = capsys.readouterr().out
  ignored = [line for line in printed.splitlines() if line.startswith("ignored")]
  assert ignored == ["ignored non-tensor entries: stats (lib.train.admin.stats.AverageMeter), "
                     "settings (lib.train.admin.settings.Settings); also not imported: epoch, "
                     "actor_type, net_type, net_info, constructor, optimizer"], printed
  assert not any(name in sys.modules for name in _FakeModules.NAMES)   # never imported
  back, _ = io.load_tracker(str(out))
  for coll in tracker_variables:
    a, b = layout.flatten(tracker_variables[coll]), layout.flatten(back[coll])
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_array_equal(np.asarray(a[k]), b[k], err_msg=str(k))


class RunsCode:
  """A pickle whose loading calls os.system (as `torch.load(weights_only=False)` would)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class ExecsCode:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


IMPORT_SIDE_EFFECT_MODULE = '''
import os
open(os.environ["DROPMAE_TEST_MARKER"], "w").write("imported")


class Payload:
  def __init__(self):
    self.note = "made at save time"
'''


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [2, 4])
def test_code_in_a_checkpoint_never_runs(mae_state, tmp_path, monkeypatch, capsys, protocol):
  """Three ways a pickle runs code: REDUCE of os.system, REDUCE of exec, and a global whose
  module runs code on import. None of them runs; the tensors load; the line names them."""
  markers = {k: tmp_path / f"{k}.marker" for k in ("system", "exec", "import")}
  monkeypatch.setenv("DROPMAE_TEST_MARKER", str(markers["import"]))
  (tmp_path / "evil_checkpoint_module.py").write_text(IMPORT_SIDE_EFFECT_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  import evil_checkpoint_module  # noqa: E402  (the machine that saved it had the module)
  blob = mae_checkpoint(mae_state)
  blob.update(system=RunsCode(markers["system"]), exec=ExecsCode(markers["exec"]),
              payload=evil_checkpoint_module.Payload())
  path = str(tmp_path / "evil.pth")
  torch.save(blob, path, pickle_protocol=protocol)
  os.remove(markers["import"])
  del sys.modules["evil_checkpoint_module"]
  monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])

  notes = []
  state = io.read_torch_state_dict(path, notes)
  assert not any(m.exists() for m in markers.values())
  assert "evil_checkpoint_module" not in sys.modules
  assert set(state) == set(mae_state)
  for k, v in mae_state.items():
    np.testing.assert_array_equal(state[k], v, err_msg=k)
  system = os.system.__module__ + ".system"   # posix.system (nt.system on Windows)
  assert notes == [f"ignored non-tensor entries: args (argparse.Namespace), system ({system}), "
                   "exec (builtins.exec), payload (evil_checkpoint_module.Payload); also not "
                   "imported: optimizer, epoch, scaler"]
  # The same through the CLI, which prints that line.
  assert convert_main(["import", path, "--out", str(tmp_path / "imp")]) == 0
  assert notes[0] in capsys.readouterr().out
  assert not any(m.exists() for m in markers.values())


@pytest.mark.timeout(60)
def test_placeholders_are_inert():
  cls = torch_pickle.placeholder_class("os.system")
  assert cls is torch_pickle.placeholder_class("os.system") and cls.global_name == "os.system"
  obj = cls("rm -rf /", shell=True)   # swallowed, never run
  obj.__setstate__({"a": 1})
  obj["k"] = 1
  obj.append(2)
  obj.extend([3])
  assert not obj.__dict__ and repr(obj) == "<ignored os.system>"
  # A whole pickled object graph: containers walked, the globals named.
  data = pickle.dumps({"x": [argparse.Namespace(a=1)], "t": (collections.Counter(a=1),)},
                      protocol=2)
  path_free = torch_pickle._Unpickler(  # pylint: disable=protected-access
      __import__("io").BytesIO(data), torch_pickle._no_storage,  # pylint: disable=protected-access
      torch_pickle._allowed_globals())  # pylint: disable=protected-access
  loaded = path_free.load()
  assert path_free.ignored == {"argparse.Namespace"}
  assert torch_pickle.placeholders_in(loaded) == {"argparse.Namespace"}
  assert loaded["t"][0] == collections.Counter(a=1)


@pytest.mark.timeout(60)
def test_unreadable_files_are_one_line_errors(mae_state, tmp_path, capsys):
  good = tmp_path / "good.pth"
  torch.save(mae_checkpoint(mae_state), good)
  legacy = tmp_path / "legacy.pth"
  torch.save(mae_checkpoint(mae_state), legacy, _use_new_zipfile_serialization=False)
  (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:5000])
  (tmp_path / "legacy_cut.pth").write_bytes(legacy.read_bytes()[:-100])
  (tmp_path / "text.pth").write_bytes(b"not a checkpoint at all\n")
  import tarfile
  with tarfile.open(tmp_path / "old.pth", "w") as tar:   # the earliest PyTorch releases' tar format
    tar.add(good, arcname="pickle")
  # A whole pickled model (torch.save(model)): its class is not read, so there is no state dict.
  torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")
  with warnings.catch_warnings():   # torch.jit.save is deprecated; such files still exist
    warnings.simplefilter("ignore", FutureWarning)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "script.pth"))
  expected = {
      "cut.pth": "truncated or damaged zip archive",
      "legacy_cut.pth": "truncated (a storage has",
      "text.pth": "neither a zip nor a legacy PyTorch checkpoint",
      "old.pth": "in the tar format of the earliest PyTorch releases",
      "module.pth": "found a pickled torch.nn.modules.linear.Linear object (not read) in ['model']",
      "script.pth": "a TorchScript archive",
  }
  for name, fragment in expected.items():
    out = tmp_path / f"out_{name}"
    assert convert_main(["import", str(tmp_path / name), "--out", str(out)]) == 2, name
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / name}: ") and fragment in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
