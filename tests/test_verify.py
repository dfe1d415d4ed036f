"""Check cells pass on agreement and fail loudly on disagreement."""
import pytest
import torch

from course_lib.verify import check_close, check_within_se


def test_check_close(capsys):
    assert check_close("same", torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-9]) < 1e-6
    assert "OK" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="off"):
        check_close("off", 1.0, 1.1, atol=0.01)
    assert "FAIL off" in capsys.readouterr().out
    with pytest.raises(ValueError, match="shape"):
        check_close("shapes", torch.zeros(2), torch.zeros(3))


def test_check_within_se():
    assert check_within_se("mean", 0.51, 0.5, 0.01) == pytest.approx(1.0)
    with pytest.raises(AssertionError, match="standard errors"):
        check_within_se("mean", 0.6, 0.5, 0.01)
