"""PyAV differences between the releases we support (CI: PyAV 18 on Python 3.11; Colab / GPU images:
PyAV 19 on Python 3.12). Every `av.open` for reading and every frame-rate read goes through here.

PyAV 19 (changelog, "Major"): `av.open` lost `metadata_encoding` / `metadata_errors` (metadata is
always UTF-8 with surrogateescape, so badly encoded tags no longer make a file unreadable), and rational
attributes (`average_rate`, `time_base`, ...) return `av.AVRational` instead of `fractions.Fraction`,
never None (unset is a falsy AVRational(0, 1)).
"""
from __future__ import annotations

import fractions

import av

# First PyAV release without av.open(metadata_errors=...).
_NO_METADATA_ERRORS_FROM = 19


def major_version(version: str | None = None) -> int:
  """'19.0.2' -> 19 (the installed PyAV when `version` is None)."""
  version = av.__version__ if version is None else version
  try:
    return int(version.split(".")[0])
  except ValueError:
    raise ValueError(f"cannot read a major version from PyAV version {version!r}") from None


def open_kwargs(version: str | None = None) -> dict:
  """Keyword arguments for `av.open(path, **open_kwargs())` when reading a video."""
  if major_version(version) < _NO_METADATA_ERRORS_FROM:
    # Before 19, badly encoded metadata (common in scraped clips) made a good video unreadable.
    return {"metadata_errors": "ignore"}
  return {}


def open_input(path: str):
  """`av.open(path)` for reading, with the options this PyAV release accepts."""
  return av.open(path, **open_kwargs())


def frame_rate(stream) -> fractions.Fraction | None:
  """A stream's average frame rate as a Fraction, or None when unknown (None / 0 / AVRational(0, 1))."""
  rate = stream.average_rate
  if rate is None:
    return None
  numerator, denominator = int(rate.numerator), int(rate.denominator)
  if numerator <= 0 or denominator <= 0:
    return None
  return fractions.Fraction(numerator, denominator)
