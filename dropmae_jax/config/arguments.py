"""argparse for the package's command lines (track, vos, convert, the data and synthetic-set makers).

`ArgumentParser` is argparse's with three changes:

* a misspelt flag is reported before anything else (argparse would first complain that a
  required flag is missing: `--weigths` ended in "the following arguments are required:
  --weights"), naming the flag and the nearest flag of that (sub)command:
      python -m dropmae_jax.track run: error: unknown flag --weigths; did you mean --weights?
* every error is that one line on stderr and exit status 2 (no usage block);
* `--help` keeps the description's and epilog's line breaks and gives each optional argument's
  default (`HelpFormatter`).

Subcommand parsers made with `add_subparsers().add_parser` are of the same class. A (sub)command
that takes flags argparse does not declare (`--config.FIELD=VALUE` overrides) names their prefixes
with `extra_prefixes=("--config.",)`: those pass the check and come back from `parse_known_args`.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
from collections.abc import Sequence


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Description and epilog: a paragraph with an indented line (a usage block, an example, a
  list) is printed as written, any other paragraph is re-wrapped to the terminal. An optional
  argument's help gets '(default: X)' when it has a default and does not mention one itself,
  and '(required)' when it must be given."""

  def _fill_text(self, text: str, width: int, indent: str) -> str:
    paragraphs = text.strip("\n").split("\n\n")
    out = []
    for paragraph in paragraphs:
      lines = paragraph.splitlines()
      if any(line[:1].isspace() for line in lines):
        out.append("\n".join(indent + line for line in lines))
      else:
        out.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                 subsequent_indent=indent))
    return "\n\n".join(out) + "\n"

  def _get_help_string(self, action: argparse.Action) -> str:
    text = action.help or ""
    if (not action.option_strings or action.default is argparse.SUPPRESS
        or "default" in text.lower()):
      return text
    if action.required:
      return f"{text} (required)" if text else "(required)"
    default = action.default
    if default is None or isinstance(default, bool) or default == "":
      return text   # a switch, or an option whose absence the help text explains
    return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
  """argparse.ArgumentParser with unknown flags named first (with the nearest known one) and
  one-line errors; see the module docstring.

  Args:
    extra_prefixes: flags starting with one of these are not reported as unknown; they are left
      for the caller in `parse_known_args`'s second result (e.g. ('--config.',)).
    Everything else as argparse.ArgumentParser; formatter_class defaults to `HelpFormatter`.
  """

  def __init__(self, *args, extra_prefixes: Sequence[str] = (), **kwargs):
    kwargs.setdefault("formatter_class", HelpFormatter)
    super().__init__(*args, **kwargs)
    self.extra_prefixes = tuple(extra_prefixes)

  # ------------------------------------------------------------------------ unknown flags

  def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
    for action in self._actions:
      if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
        return dict(action.choices)
    return {}

  def _is_known(self, name: str) -> bool:
    known = self._option_string_actions
    if name in known or (self.extra_prefixes and name.startswith(self.extra_prefixes)):
      return True
    if len(name) > 2 and name[1] not in self.prefix_chars and name[:2] in known:
      return True   # a short option with its value attached: -n3
    # argparse's abbreviations (--over for --overwrite); an ambiguous one is argparse's to report.
    return bool(self.allow_abbrev and name[:2] == name[0] * 2
                and any(o.startswith(name) for o in known))

  def unknown_flags(self, argv: Sequence[str]) -> list[str]:
    """The flags in `argv` this parser does not know, in order (before a subcommand's name only:
    the subcommand's own parser checks the rest)."""
    subcommands = self._subcommands()
    unknown = []
    for arg in argv:
      if arg == "--" or arg in subcommands:
        break
      if len(arg) < 2 or arg[0] not in self.prefix_chars or " " in arg:
        continue   # a positional (or a value that argparse would treat as one)
      if self._negative_number_matcher.match(arg) and not self._has_negative_number_optionals:
        continue
      name = arg.split("=", 1)[0]
      if not self._is_known(name) and name not in unknown:
        unknown.append(name)
    return unknown

  def nearest_flag(self, name: str) -> str | None:
    """The known flag closest to `name` (compared without their dashes), or None."""
    flags = sorted({o for o in self._option_string_actions if o not in ("-h", "--help")})
    bare = {o.lstrip(self.prefix_chars): o for o in flags}
    close = difflib.get_close_matches(name.lstrip(self.prefix_chars), list(bare), n=1,
                                      cutoff=0.6)
    return bare[close[0]] if close else None

  def unknown_flags_message(self, unknown: Sequence[str]) -> str:
    described = []
    for name in unknown:
      near = self.nearest_flag(name)
      described.append((name, f"did you mean {near}?" if near else None))
    if len(described) == 1:
      name, hint = described[0]
      return f"unknown flag {name}; " + (hint or f"`{self.prog} --help` lists the flags")
    return "unknown flags " + ", ".join(f"{n} ({h})" if h else n for n, h in described) + (
        f"; `{self.prog} --help` lists the flags")

  def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
    argv = sys.argv[1:] if args is None else list(args)
    unknown = self.unknown_flags(argv)
    if unknown:
      self.error(self.unknown_flags_message(unknown))
    return super().parse_known_args(argv, namespace)

  # ------------------------------------------------------------------------------ errors

  def error(self, message: str):
    """One line on stderr, exit status 2 (argparse prints its usage block first)."""
    message = " ".join(str(message).split())
    self.exit(2, f"{self.prog}: error: {message}\n")


def non_negative_int(text: str) -> int:
  """argparse `type=` for counts: an int >= 0."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"wants a whole number, got {text!r}") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
  return value


def describe_error(e: BaseException) -> str:
  """One line for an input or file-system error: 'FILE: reason' for an OSError that names its
  file ('[Errno 13] Permission denied: ...' otherwise), else the message, whitespace folded."""
  if isinstance(e, OSError) and e.filename and e.strerror:
    text = f"{e.filename}: {e.strerror}"
    if e.filename2:
      text += f" (-> {e.filename2})"
  else:
    text = str(e) or type(e).__name__
  return " ".join(text.split())
