"""fit learns, checkpoints round-trip, bad checkpoints are handled, configs key the files."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from course_lib.train import (checkpoint_path, config_key, ema_model, fit, load_checkpoint,
                              load_or_train, save_checkpoint)


@dataclass(frozen=True)
class Config:
    width: int = 8
    steps: int = 200


def build(config: Config) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, config.width), nn.Tanh(), nn.Linear(config.width, 1))


def regression_loss(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


@pytest.fixture(autouse=True)
def tmp_data(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    return tmp_path


def data():
    x = torch.linspace(-2, 2, 256)[:, None]
    return x, torch.sin(2 * x)


def train(model, steps=300):
    return fit(model, regression_loss, data(), steps=steps, batch_size=64, lr=1e-2, progress=False)


def test_fit_reduces_the_loss_and_returns_one_value_per_step():
    history = train(build(Config()))
    assert len(history) == 300
    assert sum(history[-20:]) / 20 < 0.2 * sum(history[:20]) / 20


def test_fit_accepts_a_sampler_callable():
    def sample(batch_size):
        x = torch.rand(batch_size, 1) * 4 - 2
        return x, torch.sin(2 * x)
    history = fit(build(Config()), regression_loss, sample, steps=50, batch_size=32,
                  progress=False, lr_schedule="constant")
    assert len(history) == 50


class RecordingModel(nn.Module):
    """A linear model that records its weights after every optimiser step (via the loss call)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)
        self.seen = []

    def forward(self, x):
        self.seen.append([p.detach().clone() for p in self.parameters()])
        return self.lin(x)


def test_fit_ema_follows_the_exponential_moving_average_recursion():
    decay, steps = 0.9, 6
    model = RecordingModel()
    ema = ema_model(model, decay)
    fit(model, regression_loss, data(), steps=steps, batch_size=16, lr=0.1, progress=False, ema=ema)
    # weights after step k = weights seen at the start of step k + 1 (and the final weights)
    after = model.seen[1:] + [[p.detach().clone() for p in model.parameters()]]
    expected = [p.clone() for p in after[0]]                  # the first update copies the weights
    for weights in after[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    for e, p in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(p.detach(), e)
    assert not ema.training


def test_ema_model_rejects_a_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        ema_model(build(Config()), 1.0)


def test_fit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        fit(build(Config()), regression_loss, data(), steps=0, batch_size=8)
    with pytest.raises(TypeError, match="batch_size"):
        fit(build(Config()), regression_loss, data(), steps=1, batch_size=8.0)
    with pytest.raises(ValueError, match="first dimension"):
        fit(build(Config()), regression_loss, (torch.zeros(3, 1), torch.zeros(4, 1)),
            steps=1, batch_size=2)
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(build(Config()), regression_loss, data(), steps=1, batch_size=2, lr_schedule="step")


def test_fit_reports_nan_loss():
    with pytest.raises(FloatingPointError, match="NaN"):
        fit(build(Config()), lambda m, b: m(b[0]).sum() * float("nan"), data(), steps=3,
            batch_size=4, progress=False)


def test_config_key_depends_on_values_only():
    assert config_key(Config()) == config_key(Config())
    assert config_key(Config()) != config_key(Config(width=9))
    with pytest.raises(TypeError, match="config"):
        config_key({"width": 8})


def test_checkpoint_round_trip(tmp_path):
    model = build(Config())
    train(model, steps=20)
    path = save_checkpoint(tmp_path / "m.pt", model, Config(), [3.0, 2.0], seconds=1.5)
    fresh = build(Config(width=8))
    with torch.no_grad():
        fresh[0].weight.zero_()
    assert load_checkpoint(path, fresh, Config()) == [3.0, 2.0]
    x = torch.randn(5, 1)
    torch.testing.assert_close(fresh(x), model(x))
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_checkpoint_with_other_config_or_architecture_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build(Config()), Config())
    with pytest.raises(ValueError, match="config"):
        load_checkpoint(path, build(Config()), Config(steps=1))
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(path, build(Config(width=4)), Config())


def test_load_or_train_trains_once_then_loads(capsys):
    calls = []

    def counting_train(model):
        calls.append(1)
        return train(model, steps=30)

    m1, h1 = load_or_train("toy", Config(), build, counting_train)
    m2, h2 = load_or_train("toy", Config(), build, counting_train)
    assert len(calls) == 1 and h1 == pytest.approx(h2)
    x = torch.randn(4, 1)
    torch.testing.assert_close(m1(x), m2(x))
    assert "Loaded toy" in capsys.readouterr().out
    load_or_train("toy", Config(width=4), build, counting_train)
    assert len(calls) == 2, "a different config trains a different model"


def test_truncated_checkpoint_is_set_aside_and_retrained(capsys):
    load_or_train("toy", Config(), build, lambda m: train(m, steps=10))
    path = checkpoint_path("toy", Config())
    path.write_bytes(path.read_bytes()[:100])
    model, history = load_or_train("toy", Config(), build, lambda m: train(m, steps=10))
    out = capsys.readouterr().out
    assert "Could not use the saved toy" in out and "retraining" in out
    assert path.with_suffix(".bad").exists() and len(history) == 10
    assert load_checkpoint(path, build(Config()), Config()) == pytest.approx(history)


def test_checkpoint_name_is_validated():
    with pytest.raises(ValueError, match="name"):
        checkpoint_path("../evil", Config())


# ------------------------------------------------------------------ fast paths
def conv_build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 1, 3, padding=1))


def image_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    return x, torch.tanh(x)


def conv_train(**fast):
    seen = []

    def loss_fn(m, batch):
        seen.append(batch[0])
        return (m(batch[0]) - batch[1]).pow(2).mean()
    model = conv_build()
    history = fit(model, loss_fn, image_data(), steps=20, batch_size=16, lr=1e-2, progress=False,
                  generator=torch.Generator().manual_seed(1), **fast)
    return model, history, seen


def test_fit_channels_last_gives_the_same_losses_in_nhwc_order():
    ref_model, ref, _ = conv_train()
    model, history, seen = conv_train(channels_last=True)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in seen)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(torch.tensor(history), torch.tensor(ref), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model[0].weight, ref_model[0].weight, rtol=1e-4, atol=1e-5)


def test_fit_compile_gives_the_same_losses_and_trains_the_model_itself():
    """torch.compile with the "aot_eager" backend (graph capture without a C++ compiler)."""
    torch._dynamo.reset()
    ref_model, ref, _ = conv_train()
    model, history, _ = conv_train(compile="aot_eager")
    torch.testing.assert_close(torch.tensor(history), torch.tensor(ref), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model[0].weight, ref_model[0].weight, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="compile"):
        conv_train(compile=1)
