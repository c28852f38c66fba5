"""The command-line front of the config entry points: flags, --help, the log filter.

`ConfigCLI` wraps `loading.load_config` for absl: a `flags_parser` for `app.run` that takes
`--config` and `--config.FIELD=VALUE` off the command line, answers `--help` with the config
fields and their comments (`fields.py`; exit 0), prints a `ConfigError` as one line (exit 2), and
keeps third-party INFO logs (orbax, jax, matplotlib) out of the default output (`--verbosity=1`
shows them).
"""
from __future__ import annotations

import logging as py_logging
import os
import sys
from collections.abc import Callable, Sequence

import ml_collections

from dropmae_jax.config.fields import defaults_source, format_fields, parse_field_docs
from dropmae_jax.config.loading import ConfigError, installed_configs, load_config

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dropmae_jax/


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


class PlainFormatter(py_logging.Formatter):
  """A record as a person reads it on a console: the message; warnings and errors prefixed.

  absl's own prefix (`I1205 21:00:46.205062 139699874290560 main.py:86] `) locates a line in a
  log file or among threads; on a console at the default verbosity it only buries the message.
  """

  def format(self, record: py_logging.LogRecord) -> str:
    message = record.getMessage()
    if record.levelno >= py_logging.WARNING:
      message = f"{record.levelname.lower()}: {message}"
    if record.exc_info:
      message = f"{message}\n{self.formatException(record.exc_info)}"
    return message


def quiet_third_party_logs(verbosity: int) -> ThirdPartyInfoFilter:
  """Installs (or updates) the filter on absl's handler, which prints every python logger.

  Python loggers that only feed it (jax's "Unable to initialize backend 'tpu'", matplotlib's
  font cache) are also set to WARNING at verbosity 0, so they skip formatting entirely. At
  verbosity 0 lines print as plain messages (`PlainFormatter`) while they go to the console;
  --verbosity=1 and absl log files (--log_dir) keep absl's prefixed format.
  """
  from absl import logging as absl_logging
  handler = absl_logging.get_absl_handler()
  existing = [f for f in handler.filters if isinstance(f, ThirdPartyInfoFilter)]
  log_filter = existing[0] if existing else ThirdPartyInfoFilter()
  log_filter.verbosity = verbosity
  if not existing:
    handler.addFilter(log_filter)
  console = getattr(handler.python_handler, "stream", None) in (sys.stderr, sys.__stderr__)
  handler.setFormatter(PlainFormatter() if verbosity <= 0 and console
                       else absl_logging.PythonFormatter())
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
    return parse_field_docs(defaults_source(), self.defaults_function)

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
