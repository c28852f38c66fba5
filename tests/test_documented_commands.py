"""Every command the README and docs/ show in a code block exists under its documented name.

The commands are extracted from the documents themselves (```bash blocks, continuation lines
joined). Each distinct `python -m dropmae_jax...` command (module and subcommand) is asked for its
`--help` in a fresh process; every flag the documents pass to it must be one it knows (for
`dropmae_jax.main`, `--config.FIELD` must be a field that `--config=NAME --help` lists). Running
the jobs themselves is the other tests' work: this guards the names a reader copies.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import FAST_COMPILE_XLA_FLAGS
from conftest import REPO_ROOT

DOCUMENTS = ["README.md", "colabs/README.md", "launch/README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(REPO_ROOT, "docs"))
    if f.endswith(".md"))
SUBCOMMANDS = {"dropmae_jax.convert", "dropmae_jax.track", "dropmae_jax.vos"}


def code_block_commands(text: str) -> list[str]:
  """The `python -m dropmae_jax...` lines of the ```bash / ```sh / ``` blocks of a markdown text,
  with backslash continuations joined and trailing comments dropped."""
  commands = []
  for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, re.S):
    if re.search(r"^error:", block, re.M):
      continue   # a block that shows a mistake and its one-line error
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
      line = line.strip().lstrip("$ ").strip()
      for part in re.split(r"&&|;", line):
        part = part.strip()
        words = part.split()
        if part.startswith("python -m dropmae_jax") and not (len(words) > 3 and "|" in words[3]):
          commands.append(" ".join(part.split(" #")[0].split()))
  return commands


def parse(command: str) -> tuple[str, str | None, list[str]]:
  """'python -m MODULE [SUB] --flag=x --other y' -> (MODULE, SUB, ['--flag', '--other'])."""
  words = shlex.split(command, comments=True)
  module, rest = words[2], words[3:]
  sub = rest[0] if module in SUBCOMMANDS and rest and not rest[0].startswith("-") else None
  flags = [w.split("=")[0] for w in rest if w.startswith("--")]
  return module, sub, flags


def documented() -> dict[tuple[str, str | None, str | None], set[str]]:
  """(module, subcommand, config for main) -> the flags the documents pass to it."""
  found: dict[tuple[str, str | None, str | None], set[str]] = {}
  for name in DOCUMENTS:
    with open(os.path.join(REPO_ROOT, name), encoding="utf-8") as f:
      for command in code_block_commands(f.read()):
        module, sub, flags = parse(command)
        config = None
        if module == "dropmae_jax.main":
          match = re.search(r"--config[= ](\S+)", command)
          config = match.group(1) if match else None
        found.setdefault((module, sub, config), set()).update(flags)
  return found


def test_the_extractor_reads_blocks_continuations_and_comments():
  text = ("Prose `python -m dropmae_jax.vos segment` is not a command.\n```\n"
          "$ python -m dropmae_jax.main --config=k700 --config.batchsize=8\n"
          "error: no field 'batchsize' in config; did you mean 'batch_size'?\n```\n```bash\n"
          "python -m dropmae_jax.vos propagate|evaluate ...   # usage, not a command\n"
          "pip install -e . && python -m dropmae_jax.main --config=demo --workdir=/tmp/w\n"
          "python -m dropmae_jax.track run --weights=W \\\n    --out=/o   # a comment\n```\n")
  commands = code_block_commands(text)
  assert commands == ["python -m dropmae_jax.main --config=demo --workdir=/tmp/w",
                      "python -m dropmae_jax.track run --weights=W --out=/o"]
  assert parse(commands[1]) == ("dropmae_jax.track", "run", ["--weights", "--out"])


@pytest.mark.timeout(420)
def test_every_documented_command_and_flag_exists():
  wanted = documented()
  assert ("dropmae_jax.main", None, "configs/demo.py") in wanted   # the README's first command
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE_XLA_FLAGS)
  procs = {}
  for module, sub, config in wanted:
    args = [sys.executable, "-m", module] + ([sub] if sub else [])
    args += [f"--config={config}"] if config else []
    procs[(module, sub, config)] = subprocess.Popen(
        args + ["--help"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
  problems = []
  for key, proc in procs.items():
    out, _ = proc.communicate(timeout=300)
    module, sub, config = key
    shown = " ".join(p for p in (module, sub, config and f"--config={config}") if p)
    if proc.returncode != 0:
      problems.append(f"{shown} --help: exit {proc.returncode}: {out[-300:]}")
      continue
    for flag in sorted(wanted[key] - {"--help"}):
      known = re.search(rf"(?<![\w.-]){re.escape(flag)}(?![\w.-])", out)
      if not known:
        problems.append(f"{shown}: the documents pass {flag}, which its --help does not list")
  assert problems == [], "\n".join(problems)
