"""Command-line configs: find, load and override them; `--help` that lists the fields; quiet logs.

Shared by every entry point (`python -m dropmae_jax.main`, the tracking CLI):

  config = load_config("k700", ["batch_size=1024", "data.root=/data/k700"])

`spec` is a path to a python file defining `get_config()` (relative to the working directory),
or the bare name of an installed config (`k700`, `demo`, `droptrack_got10k`: the files of the
repository's `configs/`, installed with the package as `dropmae_jax.configs`). Every mistake --
a missing file, a misspelled field, a value of the wrong type -- is one `ConfigError` whose
message is one line naming the problem; entry points print it and exit with status 2.

`ConfigCLI` wraps that for absl: a `flags_parser` for `app.run` that takes `--config` and
`--config.FIELD=VALUE` off the command line, answers `--help` with the config fields and their
comments (exit 0), and keeps third-party INFO logs (orbax, jax, matplotlib) out of the default
output (`--verbosity=1` shows them).
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import io
import logging as py_logging
import os
import sys
import tokenize
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

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

def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted field name, groups included: ['task', 'model', 'model.variant', ...]."""
  names = []
  for key, value in config.items():
    name = prefix + key
    names.append(name)
    if isinstance(value, ml_collections.ConfigDict):
      names.extend(field_names(value, name + "."))
  return names


def leaf_items(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
  """(dotted name, value) of every field that is not a group (ConfigDict sorts by name)."""
  items = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      items.extend(leaf_items(value, prefix + key + "."))
    else:
      items.append((prefix + key, value))
  return items


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


# --- field documentation (for --help) ---

def parse_field_docs(source: str, function: str | None = None,
                     variable: str = "c") -> dict[str, str]:
  """Dotted field -> its trailing comment, from lines like `c.model.variant = "B/16"  # doc`.

  Args:
    source: python source (e.g. config/defaults.py's).
    function: only read the body of this top-level function (None: the whole source).
    variable: the name the config is bound to in that source.
  """
  lines: tuple[int, int] | None = None
  if function is not None:
    for node in ast.parse(source).body:
      if isinstance(node, ast.FunctionDef) and node.name == function:
        lines = (node.lineno, node.end_lineno or node.lineno)
    if lines is None:
      return {}
  docs: dict[str, str] = {}
  statement: list[tokenize.TokenInfo] = []
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
      _read_statement(statement, docs, variable, lines)
      statement = []
    elif tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
      statement.append(tok)
  return docs


def _read_statement(tokens: list[tokenize.TokenInfo], docs: dict[str, str], variable: str,
                    lines: tuple[int, int] | None) -> None:
  code = [t for t in tokens if t.type != tokenize.COMMENT]
  if not code or code[0].string != variable:
    return
  # Comments on the statement's own lines; a comment line above it heads a section instead.
  comments = [t.string.lstrip("#").strip() for t in tokens
              if t.type == tokenize.COMMENT and t.start[0] >= code[0].start[0]]
  if not comments:
    return
  if lines is not None and not lines[0] <= code[0].start[0] <= lines[1]:
    return
  name = []
  i = 1
  while i + 1 < len(code) and code[i].string == "." and code[i + 1].type == tokenize.NAME:
    name.append(code[i + 1].string)
    i += 2
  if name and i < len(code) and code[i].string == "=":
    docs[".".join(name)] = comments[0]


def _configlib_source() -> str:
  with open(os.path.join(_PACKAGE_DIR, "config/defaults.py"), encoding="utf-8") as f:
    return f.read()


def format_fields(config: ml_collections.ConfigDict, docs: dict[str, str]) -> str:
  """One line per field, `  --config.NAME=VALUE   comment`, in the order `docs` lists them."""
  order = {name: i for i, name in enumerate(docs)}
  items = sorted(leaf_items(config), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
  rows = [(f"--config.{name}={value!r}", docs.get(name, "")) for name, value in items]
  width = min(max(len(r[0]) for r in rows), 44) if rows else 0
  return "\n".join(f"  {flag:<{width}}  {doc}".rstrip() for flag, doc in rows)


# --- logs ---

class ThirdPartyInfoFilter(py_logging.Filter):
  """Drops INFO/DEBUG records that do not come from dropmae_jax, unless verbosity asks for them.

  absl routes every library that logs through `absl.logging` (orbax, grain) to one python
  logger named 'absl', so the origin is read from the record's file, not its logger name.
  Warnings and errors always pass.
  """

  def __init__(self, verbosity: int = 0, package_dir: str = _PACKAGE_DIR):
    super().__init__()
    self.verbosity = verbosity
    self._package_dir = os.path.realpath(package_dir) + os.sep

  def is_ours(self, record: py_logging.LogRecord) -> bool:
    if record.name == "dropmae_jax" or record.name.startswith("dropmae_jax."):
      return True
    path = os.path.realpath(record.pathname or "")
    return path.startswith(self._package_dir)

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING or self.is_ours(record):
      return True
    if record.levelno >= py_logging.INFO:
      return self.verbosity >= 1
    return self.verbosity >= 2


def quiet_third_party_logs(verbosity: int) -> ThirdPartyInfoFilter:
  """Installs (or updates) the filter on absl's handler, which prints every python logger.

  Python loggers that only feed it (jax's "Unable to initialize backend 'tpu'", matplotlib's
  font cache) are also set to WARNING at verbosity 0, so they skip formatting entirely.
  """
  from absl import logging as absl_logging
  handler = absl_logging.get_absl_handler()
  existing = [f for f in handler.filters if isinstance(f, ThirdPartyInfoFilter)]
  log_filter = existing[0] if existing else ThirdPartyInfoFilter()
  log_filter.verbosity = verbosity
  if not existing:
    handler.addFilter(log_filter)
  level = py_logging.NOTSET if verbosity >= 1 else py_logging.WARNING
  for name in ("jax", "orbax", "matplotlib", "grain", "tensorboardX", "PIL", "absl.testing"):
    py_logging.getLogger(name).setLevel(level)
  return log_filter


# --- absl entry points ---

HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str], bool]:
  """argv -> (config spec, overrides, the other arguments, help asked).

  Takes `--config=SPEC`, `--config SPEC`, `--config.FIELD=VALUE`, `--config.FIELD VALUE` and a
  bare `--config.FIELD` (booleans); everything after `--` is left alone.
  """
  spec, overrides, rest, wants_help = None, [], [], False
  i = 0
  args = list(argv)
  while i < len(args):
    arg = args[i]
    if arg == "--":
      rest.extend(args[i:])
      break
    if arg in HELP_FLAGS:
      wants_help = True
    elif arg.startswith("--config="):
      spec = arg[len("--config="):]
    elif arg == "--config":
      if i + 1 >= len(args):
        raise ConfigError("--config needs a value: --config=NAME or --config=PATH")
      spec = args[i + 1]
      i += 1
    elif arg.startswith("--config."):
      if "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("-"):
        overrides.append(f"{arg}={args[i + 1]}")
        i += 1
      else:
        overrides.append(arg)
    else:
      rest.append(arg)
    i += 1
  return spec, overrides, rest, wants_help


def fail(message: str, status: int = 2) -> None:
  """Prints `error: message` on stderr and exits with `status` (no traceback)."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(status)


class ConfigCLI:
  """`app.run(main, flags_parser=cli.flags_parser)`, then `cli.config` inside main.

  Args:
    usage: the first help line, e.g. 'python -m dropmae_jax.main --config=NAME --workdir=DIR'.
    description: text under it (the entry point's docstring).
    flag_names: the entry point's own absl flags, listed by --help.
    defaults_function: the configlib function whose comments document the fields.
    validate: called with the loaded config (e.g. to check `config.task`); raise ConfigError.
  """

  def __init__(self, usage: str, description: str = "", flag_names: Sequence[str] = (),
               defaults_function: str = "pretrain_defaults",
               validate: Callable[[ml_collections.ConfigDict], None] | None = None):
    self.usage = usage
    self.description = description.strip()
    self.flag_names = tuple(flag_names)
    self.defaults_function = defaults_function
    self.validate = validate
    self.config: ml_collections.ConfigDict | None = None

  def field_docs(self) -> dict[str, str]:
    return parse_field_docs(_configlib_source(), self.defaults_function)

  def help_text(self, spec: str | None = None) -> str:
    """Usage, flags, installed configs and every field with its comment (and value)."""
    from absl import flags
    from dropmae_jax.config import defaults as configlib
    if spec:
      config, title = load_config(spec), f"config fields of {spec}"
    else:
      config = getattr(configlib, self.defaults_function)()
      title = f"config fields (defaults of configlib.{self.defaults_function}())"
    flag_lines = [
        "  --config=NAME|PATH: an installed config (" + ", ".join(installed_configs())
        + ") or a .py file defining get_config()",
        "  --config.FIELD=VALUE: override one field (repeatable; see below)"]
    flag_lines += [f"  --{name}: {flags.FLAGS[name].help}" for name in self.flag_names]
    flag_lines.append("  --verbosity=1: also show third-party INFO logs (orbax, jax, grain)")
    sections = [f"usage: {self.usage}", self.description, "flags:\n" + "\n".join(flag_lines),
                f"{title}:\n" + format_fields(config, self.field_docs())]
    return "\n\n".join(s for s in sections if s) + "\n"

  def flags_parser(self, argv: Sequence[str]) -> list[str]:
    """absl flags parser: help (exit 0), config (exit 2 on a mistake), flags, quiet logs."""
    from absl import flags
    try:
      spec, overrides, rest, wants_help = split_config_args(argv[1:])
      if wants_help:
        sys.stdout.write(self.help_text(spec))
        sys.stdout.flush()
        raise SystemExit(0)
      try:
        remaining = flags.FLAGS(list(argv[:1]) + rest)
      except flags.Error as e:  # unknown flag, missing --workdir, bad flag value
        fail(str(e).splitlines()[0])
      if spec is None:
        raise ConfigError("--config is required: one of "
                          f"{', '.join(installed_configs())} or a path to a .py file")
      self.config = load_config(spec, overrides)
      if self.validate is not None:
        self.validate(self.config)
    except ConfigError as e:
      fail(str(e))
    quiet_third_party_logs(int(flags.FLAGS.verbosity))
    return remaining
