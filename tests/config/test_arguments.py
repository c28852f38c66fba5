"""The command lines' argparse (config/arguments.py): misspelt flags named first with the nearest
known one, one-line errors with exit status 2, defaults in --help."""
import pytest

from dropmae_jax.config import arguments


def _parser():
  parser = arguments.ArgumentParser(prog="tool")
  sub = parser.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", extra_prefixes=("--config.",), epilog="example:\n  tool run --weights=W --out=O")
  run.add_argument("--weights", required=True, help="weights folder")
  run.add_argument("--out", required=True, help="results folder")
  run.add_argument("--split", default="test", help="benchmark split")
  run.add_argument("--seed", type=int, default=0, help="seed")
  run.add_argument("--overwrite", action="store_true", help="redo finished outputs")
  return parser


def _error(parser, argv, capsys) -> str:
  with pytest.raises(SystemExit) as e:
    parser.parse_known_args(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err   # one line, no usage block
  return err


@pytest.mark.timeout(30)
def test_misspelt_flags_are_named_before_missing_ones(capsys):
  parser = _parser()
  err = _error(parser, ["run", "--weigths=W", "--out=O"], capsys)
  assert err == "tool run: error: unknown flag --weigths; did you mean --weights?\n"
  err = _error(parser, ["run", "--weights", "W", "--ouput", "O"], capsys)
  assert "unknown flag --ouput; did you mean --out?" in err
  err = _error(parser, ["run", "--weigths", "W", "--ouput", "O", "--zzzz"], capsys)
  assert "--weigths (did you mean --weights?)" in err and "--ouput (did you mean --out?)" in err
  assert "--zzzz;" in err and "tool run --help" in err
  # Missing flags are still reported (in one line) when every flag is known.
  assert "required: --weights, --out" in _error(parser, ["run"], capsys)


@pytest.mark.timeout(30)
def test_known_spellings_pass():
  args, extra = _parser().parse_known_args(
      ["run", "--weights=W", "--out", "O", "--over", "--seed", "-3", "--config.a.b=1"])
  assert (args.weights, args.out, args.overwrite, args.seed) == ("W", "O", True, -3)
  assert extra == ["--config.a.b=1"]


@pytest.mark.timeout(30)
def test_help_gives_defaults_and_the_example(capsys):
  with pytest.raises(SystemExit) as e:
    _parser().parse_args(["run", "--help"])
  assert e.value.code == 0
  out = " ".join(capsys.readouterr().out.split())
  assert "benchmark split (default: test)" in out and "seed (default: 0)" in out
  assert "weights folder (required)" in out
  assert "example: tool run --weights=W --out=O" in out


@pytest.mark.timeout(30)
def test_non_negative_int():
  assert arguments.non_negative_int("3") == 3
  for bad in ("-1", "x"):
    with pytest.raises(Exception):
      arguments.non_negative_int(bad)
