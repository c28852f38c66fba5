"""PyAV compatibility: both sides of every version branch, the newer one by faking the version."""
import fractions

import av
import pytest

from dropmae_jax.data import av_compat
from dropmae_jax.data import samples


@pytest.mark.parametrize("version, expected", [("18.1.0", {"metadata_errors": "ignore"}),
                                               ("14.4.0", {"metadata_errors": "ignore"}),
                                               ("19.0.2", {}), ("20.0.0", {})])
def test_open_kwargs_by_version(version, expected):
  assert av_compat.open_kwargs(version) == expected


def test_open_input_passes_only_accepted_arguments(monkeypatch, tmp_path):
  """PyAV 19's av.open raises TypeError on metadata_errors: emulate it and open a real file."""
  real_open = av.open
  seen = []

  def open_19(path, *args, **kwargs):
    if "metadata_errors" in kwargs:
      raise TypeError("open() got an unexpected keyword argument 'metadata_errors'")
    seen.append(kwargs)
    return real_open(path, *args, **kwargs)

  clip = samples.sample_video_dir() + "/bikes.mp4"
  monkeypatch.setattr(av, "__version__", "19.0.2")
  monkeypatch.setattr(av, "open", open_19)
  with av_compat.open_input(clip) as container:
    assert container.streams.video
  assert seen == [{}]
  monkeypatch.setattr(av, "__version__", "18.1.0")
  with pytest.raises(TypeError, match="metadata_errors"):
    av_compat.open_input(clip)


def test_unreadable_version_is_named():
  with pytest.raises(ValueError, match="'dev'"):
    av_compat.major_version("dev")


class _AVRational:
  """What PyAV 19 returns for rates: numerator/denominator, falsy when 0/1, never None."""

  def __init__(self, num, den):
    self.numerator, self.denominator = num, den

  def __bool__(self):
    return self.numerator != 0


class _Stream:
  def __init__(self, rate):
    self.average_rate = rate


@pytest.mark.parametrize("rate, expected", [
    (fractions.Fraction(30000, 1001), fractions.Fraction(30000, 1001)),  # PyAV <= 18
    (None, None),                                                         # PyAV <= 18, unknown
    (_AVRational(25, 1), fractions.Fraction(25)),                         # PyAV 19
    (_AVRational(0, 1), None),                                            # PyAV 19, unknown
])
def test_frame_rate(rate, expected):
  assert av_compat.frame_rate(_Stream(rate)) == expected


def test_frame_rate_of_a_real_clip():
  with av_compat.open_input(samples.sample_video_dir() + "/bikes.mp4") as container:
    rate = av_compat.frame_rate(container.streams.video[0])
  assert rate is not None and 1 < float(rate) < 120
