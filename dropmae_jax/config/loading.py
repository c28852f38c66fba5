"""Command-line configs: find, load and override them.

Shared by every entry point (`python -m dropmae_jax.main`, the tracking CLI):

  config = load_config("k700", ["batch_size=1024", "data.root=/data/k700"])

`spec` is a path to a python file defining `get_config()` (relative to the working directory),
or the bare name of an installed config (`k700`, `demo`, `droptrack_got10k`: the files of the
repository's `configs/`, installed with the package as `dropmae_jax.configs`). Every mistake --
a missing file, a misspelled field, a value of the wrong type -- is one `ConfigError` whose
message is one line naming the problem; entry points print it and exit with status 2.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import traceback
from collections.abc import Sequence
from typing import Any

import ml_collections

from dropmae_jax.config.fields import field_names

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dropmae_jax/
CONFIGS_PACKAGE = "dropmae_jax.configs"


class ConfigError(ValueError):
  """A config mistake the user can fix; the message is one line that names it."""


# --- finding config files ---

def config_dirs() -> list[str]:
  """Folders holding the installed configs, most authoritative first.

  An installed package has them as `dropmae_jax.configs` (setup.py maps the repository's
  `configs/` there; editable installs point that package at the repository folder). A source
  checkout used without installing has them next to the package.
  """
  dirs = []
  try:
    spec = importlib.util.find_spec(CONFIGS_PACKAGE)
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    dirs.extend(os.path.abspath(d) for d in spec.submodule_search_locations)
  repository = os.path.dirname(_PACKAGE_DIR)
  if os.path.isfile(os.path.join(repository, "setup.py")):  # not site-packages' neighbours
    dirs.append(os.path.join(repository, "configs"))
  unique = []
  for d in dirs:
    if os.path.isdir(d) and os.path.realpath(d) not in map(os.path.realpath, unique):
      unique.append(d)
  return unique


def installed_configs() -> dict[str, str]:
  """Bare config name -> file, e.g. {'demo': '.../configs/demo.py', 'k700': ...}."""
  found: dict[str, str] = {}
  for d in config_dirs():
    for name in sorted(os.listdir(d)):
      stem, ext = os.path.splitext(name)
      if ext == ".py" and not stem.startswith("_") and stem not in found:
        found[stem] = os.path.join(d, name)
  return found


def resolve_config_path(spec: str) -> str:
  """A config spec (path or installed name) -> an existing file. Raises ConfigError."""
  if not spec:
    raise ConfigError(f"no config given: pass --config=PATH or one of the installed configs: "
                      f"{', '.join(installed_configs()) or '(none found)'}")
  if os.path.isfile(spec):
    return spec
  installed = installed_configs()
  stem, ext = os.path.splitext(os.path.basename(spec))
  # A bare name, or the README's `configs/NAME.py` typed outside the repository root.
  parent = os.path.normpath(os.path.dirname(spec))
  if (ext in ("", ".py") and stem in installed
      and (spec == stem or (not os.path.isabs(spec) and parent == "configs"))):
    return installed[stem]
  names = ", ".join(installed) or "(none found)"
  close = difflib.get_close_matches(stem, list(installed), n=1, cutoff=0.6)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  if os.path.sep in spec or ext:
    raise ConfigError(f"config file {spec!r} does not exist (looked from {os.getcwd()}); "
                      f"installed configs: {names}{hint}")
  raise ConfigError(f"no config named {spec!r}; installed configs: {names} "
                    f"(or give a path to a .py file defining get_config()){hint}")


def _error_line(path: str, err: BaseException) -> str:
  """`path:LINE: Type: message` for an exception raised while running a config file."""
  line = ""
  for frame in traceback.extract_tb(err.__traceback__):
    if os.path.abspath(frame.filename) == os.path.abspath(path):
      line = f":{frame.lineno}"
  if isinstance(err, SyntaxError) and err.lineno:
    line = f":{err.lineno}"
  message = str(err).replace("\n", " ")
  return f"{path}{line}: {type(err).__name__}: {message}"


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `path`'s get_config(). Raises ConfigError naming the file and line of a failure."""
  module_name = "dropmae_jax_config_" + "".join(
      ch if ch.isalnum() else "_" for ch in os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"config file {path!r} is not a python file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # any mistake in the file: report where, in one line
    raise ConfigError(_error_line(path, e)) from e
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"config file {path!r} defines no get_config() function")
  try:
    config = get_config()
  except Exception as e:
    raise ConfigError(_error_line(path, e)) from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, "
                      f"not an ml_collections.ConfigDict")
  return config


# --- overrides ---

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _type_name(value: Any) -> str:
  return "tuple" if isinstance(value, (tuple, list)) else type(value).__name__


def parse_value(name: str, current: Any, text: str) -> Any:
  """`text` from the command line as a value of `current`'s type. Raises ConfigError."""
  def bad(expected: str) -> ConfigError:
    return ConfigError(f"config.{name} expects {expected}, got {text!r}")

  if isinstance(current, bool):
    low = text.strip().lower()
    if low in _TRUE:
      return True
    if low in _FALSE:
      return False
    raise bad("a bool (true/false)")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise bad("an int") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise bad("a float") from None
  if isinstance(current, str):
    return text
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise bad(f"a tuple like {tuple(current)!r}") from None
    if not isinstance(value, (tuple, list)):
      raise bad(f"a tuple like {tuple(current)!r}")
    value = tuple(value)
    if len(value) == len(current):  # keep element types: (0.2, 1) means (0.2, 1.0)
      try:
        value = tuple(float(v) if isinstance(c, float) and isinstance(v, (int, float))
                      and not isinstance(v, bool) else v for c, v in zip(current, value))
      except (TypeError, ValueError):
        pass
    return value
  if current is None:
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  raise ConfigError(f"config.{name} holds a {type(current).__name__}, which cannot be set from "
                    f"the command line")


def _normalise_override(item: str) -> tuple[str, str | None]:
  """'--config.a.b=1' / 'a.b=1' / 'a.b' -> ('a.b', '1' | None)."""
  item = item.strip()
  if item.startswith("--"):
    item = item[2:]
  if item.startswith("config."):
    item = item[len("config."):]
  name, eq, text = item.partition("=")
  return name.strip(), (text if eq else None)


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
  """Sets one 'dotted.name=value' on `config` in place. Raises ConfigError."""
  name, text = _normalise_override(item)
  parts = name.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(name, field_names(config), n=1, cutoff=0.6)
      hint = (f"did you mean {close[0]!r}?" if close
              else "run with --help to list the fields")
      raise ConfigError(f"no field {name!r} in config; {hint}")
    if i < len(parts) - 1:
      node = node[part]
  current = node[parts[-1]]
  if isinstance(current, ml_collections.ConfigDict):
    example = next(iter(current.keys()), "...")
    raise ConfigError(f"config.{name} is a group of fields; set one of them, e.g. "
                      f"--config.{name}.{example}=...")
  if text is None:
    if not isinstance(current, bool):
      raise ConfigError(f"--config.{name} needs a value: --config.{name}=VALUE "
                        f"({_type_name(current)})")
    text = "true"
  value = parse_value(name, current, text)
  try:
    with node.unlocked():
      node[parts[-1]] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.{name} expects {_type_name(current)}, got {text!r} ({e})") from e


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config `spec` (a path or an installed name) with `overrides` applied, locked.

  Args:
    spec: 'configs/k700.py', '/abs/mine.py', or an installed name ('k700', 'demo', ...).
    overrides: 'dotted.field=value' strings (a leading '--config.' is accepted), applied in
      order; values are parsed as the field's current type (tuples as python literals).
  Raises:
    ConfigError: one line naming the missing file, the unknown field (with the nearest name)
      or the field, expected type and value.
  """
  config = load_config_file(resolve_config_path(spec))
  for item in overrides:
    apply_override(config, item)
  config.lock()  # a typo in code can no longer add a field silently
  return config
