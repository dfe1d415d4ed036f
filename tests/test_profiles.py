"""The profile switch: argument over environment over device default; sizes follow it."""
import pytest
import torch

from course_lib.profiles import Profile, default_profile_name, get_profile


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    assert get_profile().name == "gpu"
    assert get_profile("smoke").name == "smoke"


def test_default_follows_the_device(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    expected = "gpu" if torch.cuda.is_available() else default_profile_name()
    assert get_profile().name == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile().name == "gpu"


def test_pick_changes_sizes_with_the_profile():
    sizes = [get_profile(p).pick(smoke=10, cpu=1000, gpu=20000) for p in ("smoke", "cpu", "gpu")]
    assert sizes == [10, 1000, 20000]
    assert get_profile("smoke").is_smoke and not Profile("cpu").is_smoke


def test_unknown_profile_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="profile must be one of"):
        get_profile("fast")
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ValueError, match="COURSE_PROFILE"):
        get_profile()
    with pytest.raises(TypeError, match="profile"):
        get_profile(3)
