"""Tests for course_lib.nets: time embedding, MLP and U-Net."""
import math

import numpy as np
import pytest
import torch

from course_lib.nets import MLP, UNet, count_parameters, sinusoidal_embedding


def small_unet(**kw) -> UNet:
    """A tiny U-Net (same architecture, few channels) so the tests stay fast."""
    args = dict(base_channels=8, emb_dim=32)
    args.update(kw)
    return UNet(**args)


def randomize_output_layer(net: UNet) -> UNet:
    """The U-Net's last conv starts at zero; give it weights so the output depends on everything."""
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    return net


# ----------------------------------------------------------------------------------------------
# sinusoidal_embedding
# ----------------------------------------------------------------------------------------------

def test_embedding_matches_numpy():
    t = np.array([0.0, 1.0, 5.0, 17.25, 999.5])
    dim, max_period = 16, 10_000.0
    half = dim // 2
    freqs = max_period ** (-np.arange(half) / half)
    expected = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=1)
    got = sinusoidal_embedding(torch.tensor(t, dtype=torch.float64), dim, max_period)
    assert got.shape == (5, dim) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_embedding_integer_steps_and_dtype():
    t = torch.arange(1, 11)
    emb = sinusoidal_embedding(t, 32)
    assert emb.shape == (10, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, sinusoidal_embedding(t.float(), 32))
    # sin^2 + cos^2 = 1 for each frequency
    torch.testing.assert_close(emb[:, :16] ** 2 + emb[:, 16:] ** 2, torch.ones(10, 16))


def test_embedding_distinct_times_are_distinct():
    emb = sinusoidal_embedding(torch.arange(1, 1001), 64)  # (1000, 64)
    d = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert d.min() > 0.1


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(t=torch.zeros(3), dim=7), ValueError, "dim"),
    (dict(t=torch.zeros(3), dim=0), ValueError, "dim"),
    (dict(t=torch.zeros(3, 1), dim=8), ValueError, "t"),
    (dict(t=[1.0, 2.0], dim=8), TypeError, "t"),
    (dict(t=torch.zeros(3), dim=8, max_period=0.0), ValueError, "max_period"),
])
def test_embedding_bad_input(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        sinusoidal_embedding(**kwargs)


# ----------------------------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_mlp_shapes(dim, batch):
    net = MLP(dim=dim, hidden=32, depth=2, emb_dim=16)
    out = net(torch.randn(batch, dim), torch.randint(1, 1001, (batch,)))
    assert out.shape == (batch, dim) and out.dtype == torch.float32


def test_mlp_scalar_t_broadcasts():
    torch.manual_seed(0)
    net, x = MLP(hidden=32), torch.randn(5, 2)
    ref = net(x, torch.full((5,), 40.0))
    for t in (40, 40.0, torch.tensor(40), torch.tensor(40.0)):
        torch.testing.assert_close(net(x, t), ref)
    assert not torch.allclose(net(x, 41), ref)  # and t matters


def test_mlp_class_conditioning_and_null_label():
    torch.manual_seed(0)
    net, x, t = MLP(hidden=32, num_classes=3), torch.randn(6, 2), torch.full((6,), 10)
    out0, out1 = net(x, t, torch.zeros(6, dtype=torch.long)), net(x, t, torch.ones(6, dtype=torch.long))
    assert not torch.allclose(out0, out1)
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((6,), -1)))
    # a mixed batch: each sample as if alone
    y = torch.tensor([0, -1, 2, 1, -1, 0])
    rows = [net(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(6)]
    torch.testing.assert_close(net(x, t, y), torch.cat(rows), rtol=1e-5, atol=1e-6)


def test_mlp_gradients_reach_all_parameters():
    torch.manual_seed(0)
    net = MLP(hidden=32, num_classes=3)
    y = torch.tensor([0, 1, 2, -1])  # every row of the class table, the null row included
    net(torch.randn(4, 2), torch.tensor([1, 50, 500, 1000]), y).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlp_learns_time_dependent_function(one_thread):
    """f(x, t) = x cos(t / 100) on t in 0..314: 200 Adam steps fit it closely."""
    torch.manual_seed(0)
    net = MLP(hidden=64, depth=3, emb_dim=32)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def batch(n):
        x, t = torch.randn(n, 2), torch.randint(0, 315, (n,))
        return x, t, x * torch.cos(t / 100.0)[:, None]

    for _ in range(200):
        x, t, target = batch(256)
        loss = (net(x, t) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, t, target = batch(2000)
    with torch.no_grad():
        mse = (net(x, t) - target).pow(2).mean().item()
    assert mse < 0.01 * target.pow(2).mean().item(), mse  # under 1% of the target's power


@pytest.mark.parametrize("call, exc, name", [
    (lambda n: n(torch.randn(4), 1), ValueError, "x"),
    (lambda n: n(torch.randn(4, 3), 1), ValueError, "x"),
    (lambda n: n(torch.ones(4, 2, dtype=torch.long), 1), TypeError, "x"),
    (lambda n: n(np.zeros((4, 2)), 1), TypeError, "x"),
    (lambda n: n(torch.randn(4, 2), torch.ones(5)), ValueError, "t"),
    (lambda n: n(torch.randn(4, 2), torch.ones(4, 1)), ValueError, "t"),
    (lambda n: n(torch.randn(4, 2), "10"), TypeError, "t"),
    (lambda n: n(torch.randn(4, 2), 1, torch.zeros(4, dtype=torch.long)), ValueError, "y"),
])
def test_mlp_bad_input(call, exc, name):
    with pytest.raises(exc, match=name):
        call(MLP(hidden=16))


@pytest.mark.parametrize("y, exc", [
    (torch.tensor([0, 3]), ValueError),
    (torch.tensor([0, -2]), ValueError),
    (torch.tensor([0.0, 1.0]), TypeError),
    (torch.tensor([0, 1, 2]), ValueError),
    ([0, 1], TypeError),
])
def test_bad_labels(y, exc):
    for net in (MLP(hidden=16, num_classes=3), small_unet(num_classes=3)):
        x = torch.randn(2, 2) if isinstance(net, MLP) else torch.randn(2, 1, 28, 28)
        with pytest.raises(exc, match="y"):
            net(x, 1, y)


@pytest.mark.parametrize("make, exc", [
    (lambda: MLP(hidden=0), ValueError),
    (lambda: MLP(depth=2.5), TypeError),
    (lambda: MLP(emb_dim=15), ValueError),
    (lambda: UNet(base_channels=0), ValueError),
    (lambda: UNet(channel_mults=()), TypeError),
    (lambda: UNet(dropout=1.5), ValueError),
    (lambda: UNet(num_classes=0), ValueError),
])
def test_bad_constructor_arguments(make, exc):
    with pytest.raises(exc):
        make()


# ----------------------------------------------------------------------------------------------
# UNet
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 3])
def test_unet_shapes(batch):
    net = small_unet()
    out = net(torch.randn(batch, 1, 28, 28), torch.randint(1, 1001, (batch,)))
    assert out.shape == (batch, 1, 28, 28)
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer


def test_unet_default_config_and_variants():
    x = torch.randn(2, 1, 28, 28)
    assert UNet()(x, 5).shape == (2, 1, 28, 28)
    net = small_unet(in_channels=3, channel_mults=(1, 2), num_res_blocks=2, attention=False)
    assert net(torch.randn(2, 3, 28, 28), 5).shape == (2, 3, 28, 28)


def test_unet_parameter_counts():
    n32 = count_parameters(UNet(base_channels=32))
    assert 500_000 < n32 < 2_000_000
    assert count_parameters(UNet(base_channels=16)) < n32 < count_parameters(UNet(base_channels=64))
    lin = torch.nn.Linear(3, 4)
    assert count_parameters(lin) == 16
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 12 and count_parameters(lin, trainable_only=False) == 16


def test_unet_scalar_t_and_null_label():
    torch.manual_seed(0)
    net = randomize_output_layer(small_unet(num_classes=10)).eval()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(net(x, 7), net(x, torch.tensor([7, 7, 7])))
    torch.testing.assert_close(net(x, 7), net(x, 7, torch.full((3,), -1)))
    assert not torch.allclose(net(x, 7, torch.tensor([1, 2, 3])), net(x, 7, torch.tensor([4, 5, 6])))
    assert not torch.allclose(net(x, 7), net(x, 700))


def test_unet_zero_output_layer_trains_and_gradients_reach_all_parameters():
    torch.manual_seed(0)
    net = small_unet(num_classes=3)
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 10, 100, 1000]), torch.tensor([0, 1, 2, -1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(x, t, y).sub(x).pow(2).mean().backward()
    assert net.conv_out.weight.grad.abs().sum() > 0  # only the last layer gets a gradient at first
    opt.step()
    opt.zero_grad()
    out = net(x, t, y)
    assert out.abs().sum() > 0  # one step makes the output non-zero
    out.sub(x).pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_channels_last_and_autocast():
    torch.manual_seed(0)
    net = randomize_output_layer(small_unet(num_classes=10)).eval()
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 300]), torch.tensor([1, -1])
    ref = net(x, t, y)
    net_cl = net.to(memory_format=torch.channels_last)
    out_cl = net_cl(x.to(memory_format=torch.channels_last), t, y)
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf = net_cl(x.to(memory_format=torch.channels_last), t, y)
    assert out_bf.shape == ref.shape and torch.isfinite(out_bf).all()
    assert (out_bf.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        MLP(hidden=16)(torch.randn(3, 2), 5).float().sum().backward()


@pytest.mark.parametrize("call, exc", [
    (lambda n: n(torch.randn(2, 28, 28), 1), ValueError),          # no channel axis
    (lambda n: n(torch.randn(2, 3, 28, 28), 1), ValueError),       # wrong channels
    (lambda n: n(torch.randn(2, 1, 27, 27), 1), ValueError),       # not divisible by 4
    (lambda n: n(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 1), TypeError),
])
def test_unet_bad_x(call, exc):
    with pytest.raises(exc, match="x"):
        call(small_unet())


def test_unet_bad_t_and_y():
    net, x = small_unet(), torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="t"):
        net(x, torch.ones(3))
    with pytest.raises(ValueError, match="y"):
        net(x, 1, torch.tensor([0, 1]))
