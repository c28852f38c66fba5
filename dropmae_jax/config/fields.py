"""The config fields as --help lists them: dotted names, leaf values, and each field's comment.

A field's documentation is the trailing comment of the line that sets it in `config/defaults.py`
(`c.model.variant = "B/16"  # doc`); `format_fields` prints one `--config.NAME=VALUE  doc` line
per field.
"""
from __future__ import annotations

import ast
import io
import os
import tokenize
from typing import Any

import ml_collections


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



def defaults_source() -> str:
  """The source of config/defaults.py, whose comments document the fields."""
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults.py"),
            encoding="utf-8") as f:
    return f.read()


def format_fields(config: ml_collections.ConfigDict, docs: dict[str, str]) -> str:
  """One line per field, `  --config.NAME=VALUE   comment`, in the order `docs` lists them."""
  order = {name: i for i, name in enumerate(docs)}
  items = sorted(leaf_items(config), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
  rows = [(f"--config.{name}={value!r}", docs.get(name, "")) for name, value in items]
  width = min(max(len(r[0]) for r in rows), 44) if rows else 0
  return "\n".join(f"  {flag:<{width}}  {doc}".rstrip() for flag, doc in rows)
