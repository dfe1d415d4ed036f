"""Tests for course_lib.plotting: each picture draws the expected artists from tensors
(with grad) and NumPy arrays, and bad input raises an error naming the argument."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

from course_lib import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _gaussian_log_prob(mean=(0.0, 0.0)):
    """log N(x; mean, I) for (M, 2) points, recording every batch it is called on."""
    calls = []

    def log_prob(x):
        calls.append((len(x), torch.is_grad_enabled()))
        return -0.5 * ((x - torch.tensor(mean)) ** 2).sum(1) - np.log(2 * np.pi)
    return log_prob, calls


# ---------------------------------------------------------------- scatter2d

@pytest.mark.parametrize("make", [lambda a: torch.tensor(a, requires_grad=True), np.asarray])
def test_scatter2d_draws_n_points(make):
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    ax = plotting.scatter2d(make(x), title="data", lim=4)
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points.get_offsets(), x, rtol=1e-6)
    assert ax.get_title() == "data" and ax.get_xlim() == (-4, 4) and ax.get_aspect() == 1.0


def test_scatter2d_draws_into_given_ax_and_colours_by_tensor():
    _, ax = plt.subplots()
    labels = torch.arange(10) % 2
    assert plotting.scatter2d(torch.randn(10, 2), ax=ax, c=labels) is ax
    np.testing.assert_array_equal(ax.collections[0].get_array(), labels.numpy())


def test_scatter2d_rejects_bad_input():
    with pytest.raises(ValueError, match="x must have last dimension 2"):
        plotting.scatter2d(torch.randn(10, 3))
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        plotting.scatter2d(torch.randn(10))
    with pytest.raises(TypeError, match="x must be"):
        plotting.scatter2d("points")
    with pytest.raises(TypeError, match="ax must be"):
        plotting.scatter2d(torch.randn(10, 2), ax="left")


# ---------------------------------------------------------------- density2d

def test_density2d_evaluates_grid_without_grad_and_shows_the_density():
    log_prob, calls = _gaussian_log_prob()
    ax = plotting.density2d(log_prob, n=150, lim=2.0, title="p(x)")
    assert sum(m for m, _ in calls) == 150 * 150
    assert len(calls) > 1 and not any(grad for _, grad in calls)  # chunked, under no_grad
    img = ax.images[0].get_array()
    v = torch.linspace(-2, 2, 150)
    grid = torch.stack(torch.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 2)
    assert img.shape == (150, 150)
    assert img.max() == pytest.approx(log_prob(grid).exp().max().item(), rel=1e-6)
    assert ax.get_title() == "p(x)"


def test_density2d_orientation_rows_are_y():
    log_prob, _ = _gaussian_log_prob(mean=(1.5, -1.0))
    ax = plotting.density2d(log_prob, n=61, lim=3.0)  # grid step 0.1
    row, col = np.unravel_index(np.argmax(ax.images[0].get_array()), (61, 61))
    assert (col, row) == (45, 20)  # x = -3 + 0.1 * 45 = 1.5, y = -3 + 0.1 * 20 = -1
    assert ax.images[0].origin == "lower"


def test_density2d_accepts_module_method_with_parameters():
    net = torch.nn.Linear(2, 1)
    ax = plotting.density2d(lambda x: net(x).squeeze(1), n=10)
    assert ax.images[0].get_array().shape == (10, 10)


def test_density2d_rejects_bad_input():
    with pytest.raises(ValueError, match=r"log_prob must map \(M, 2\) points to shape \(M,\)"):
        plotting.density2d(lambda x: x, n=10)
    with pytest.raises(TypeError, match="log_prob must be callable"):
        plotting.density2d(torch.zeros(3))
    with pytest.raises(ValueError, match="n must be >= 1"):
        plotting.density2d(_gaussian_log_prob()[0], n=0)
    with pytest.raises(ValueError, match="lim must be > 0"):
        plotting.density2d(_gaussian_log_prob()[0], lim=-1.0)


# ---------------------------------------------------------------- vector_field

def test_vector_field_draws_n_by_n_arrows_of_fn():
    ax = plotting.vector_field(lambda x: -x, n=7, lim=2.0, title="score")
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    assert quiver.N == 49
    np.testing.assert_allclose(quiver.U, -quiver.X, atol=1e-6)
    np.testing.assert_allclose(quiver.V, -quiver.Y, atol=1e-6)


def test_vector_field_normalize_and_autograd_score():
    def score(x):  # grad of log N(x; 0, I) by autograd: needs grad enabled inside fn
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad((-0.5 * (x ** 2).sum()), x)[0]
    ax = plotting.vector_field(score, n=6, normalize=True)
    q = ax.collections[0]
    np.testing.assert_allclose(np.hypot(q.U, q.V), 1.0, rtol=1e-5)


def test_vector_field_rejects_wrong_output_shape():
    with pytest.raises(ValueError, match="fn must map"):
        plotting.vector_field(lambda x: x.sum(1), n=4)


# ---------------------------------------------------------------- image_grid

def test_image_grid_tiles_and_maps_minus_one_one_to_unit_range():
    x = torch.rand(10, 1, 5, 4, requires_grad=True) * 2 - 1  # values in [-1, 1]
    ax = plotting.image_grid(x, nrow=4, title="samples")
    img = ax.images[0].get_array()
    assert img.shape == (3 * 5, 4 * 4)  # ceil(10 / 4) = 3 rows of 4 images
    np.testing.assert_allclose(img[5:10, 4:8], ((x[5, 0] + 1) / 2).detach().numpy(), rtol=1e-6)
    assert img.min() >= 0 and img.max() <= 1
    assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    assert ax.images[0].get_cmap().name == "gray"


def test_image_grid_keeps_unit_range_and_clamps_numpy_input():
    x = np.random.default_rng(0).uniform(0, 1.2, size=(9, 6, 6))  # (B, H, W), some > 1
    img = plotting.image_grid(x).images[0].get_array()
    assert img.shape == (18, 18)  # default nrow = ceil(sqrt(9)) = 3
    np.testing.assert_allclose(img[:6, :6], np.clip(x[0], 0, 1), rtol=1e-6)
    assert img.max() == 1.0


def test_image_grid_explicit_value_range_for_non_negative_minus_one_one_images():
    x = torch.full((2, 1, 3, 3), 0.5)                    # [-1, 1] images that happen to be >= 0
    img = plotting.image_grid(x, value_range=(-1, 1)).images[0].get_array()
    np.testing.assert_allclose(img[:3, :3], 0.75)
    with pytest.raises(ValueError, match="value_range"):
        plotting.image_grid(x, value_range=(1, 1))


def test_image_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="x must have 1 channel"):
        plotting.image_grid(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="x must have 3 or 4 dimensions"):
        plotting.image_grid(torch.rand(8, 8))
    with pytest.raises(ValueError, match="nrow must be >= 1"):
        plotting.image_grid(torch.rand(4, 8, 8), nrow=0)


# ---------------------------------------------------------------- loss_curve

def test_loss_curve_raw_and_moving_average():
    history = np.linspace(2.0, 1.0, 500) + 0.1 * np.random.default_rng(0).normal(size=500)
    ax = plotting.loss_curve(history)
    raw, avg = ax.lines
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(500))
    assert len(avg.get_xdata()) == 500 - 10 + 1  # default window 500 // 50 = 10
    np.testing.assert_allclose(avg.get_ydata()[0], history[:10].mean())
    assert raw.get_linewidth() < avg.get_linewidth() and raw.get_alpha() < 1
    assert ax.get_yscale() == "linear" and ax.get_title() == "training loss"


def test_loss_curve_from_tensors_smooth_and_log_scale():
    history = [torch.tensor(10.0 ** -(i / 20), requires_grad=True) for i in range(100)]
    ax = plotting.loss_curve(history, smooth=5, title=None)
    assert len(ax.lines) == 2 and len(ax.lines[1].get_xdata()) == 96
    assert ax.get_yscale() == "log"  # positive, spanning five decades
    assert plotting.loss_curve(torch.ones(3), logy=True).get_yscale() == "log"


def test_loss_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="history must"):
        plotting.loss_curve([])
    with pytest.raises(ValueError, match="history must have 1 dimensions"):
        plotting.loss_curve(torch.ones(4, 2))
    with pytest.raises(ValueError, match="smooth must be >= 1"):
        plotting.loss_curve([1.0, 2.0], smooth=0)


# ---------------------------------------------------------------- trajectories

def test_trajectories_1d_over_time():
    xs = torch.randn(30, 4, requires_grad=True).cumsum(0)  # (T, N)
    t = np.linspace(1.0, 0.0, 30)
    ax = plotting.trajectories(xs, t=t)
    assert len(ax.lines) == 4
    np.testing.assert_allclose(ax.lines[2].get_xdata(), t)
    np.testing.assert_allclose(ax.lines[2].get_ydata(), xs[:, 2].detach().numpy())


def test_trajectories_2d_paths_from_list_of_snapshots():
    snapshots = [torch.randn(6, 2) for _ in range(12)]  # T = 12 tensors (N, 2)
    ax = plotting.trajectories(snapshots)
    assert len(ax.lines) == 6
    np.testing.assert_allclose(ax.lines[0].get_xydata(), torch.stack(snapshots)[:, 0].numpy())
    np.testing.assert_allclose(ax.collections[0].get_offsets(), snapshots[-1].numpy())


def test_trajectories_rejects_bad_input():
    with pytest.raises(ValueError, match=r"xs must have shape \(T, N\) or \(T, N, 2\)"):
        plotting.trajectories(torch.randn(5, 3, 3))
    with pytest.raises(ValueError, match="t must have length T = 5"):
        plotting.trajectories(torch.randn(5, 3), t=np.arange(4))


def test_loss_curves_of_two_runs_share_an_axes_with_their_own_colours_and_labels():
    ax = plotting.loss_curve([3.0, 2.0, 1.0], label="run a")
    plotting.loss_curve([3.0, 2.5, 2.0], ax=ax, label="run b")
    colours = {line.get_color() for line in ax.lines}
    assert len(ax.lines) == 4 and len(colours) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run a", "run b"]
