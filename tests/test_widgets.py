"""Tests for course_lib.widgets: controls from shorthands, redraws on change, the static
render used when notebooks are executed headless, and one real headless kernel run."""
import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from course_lib import widgets as cw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def shown(monkeypatch):
    """Everything course_lib.widgets displays, in order."""
    objs = []
    monkeypatch.setattr(cw, "display", lambda obj, **kw: objs.append(obj))
    return objs


def _recording_draw():
    """A draw function that plots `a` and records the values of every call."""
    calls = []

    def draw(a, method="ddpm"):
        calls.append({"a": a, "method": method})
        plt.plot([0, 1], [0, a])
    return draw, calls


# ---------------------------------------------------------------- controls

def test_is_static_reads_course_static(monkeypatch):
    monkeypatch.setenv("COURSE_STATIC", "1")
    assert cw.is_static()
    monkeypatch.setenv("COURSE_STATIC", "0")
    assert not cw.is_static()
    monkeypatch.delenv("COURSE_STATIC")
    assert not cw.is_static()


def test_controls_from_shorthand():
    c = cw.controls_from_spec(steps=(1, 100, 1, 10), beta=(0.0, 1, 0.05, 0.5),
                              method=["ddpm", "ddim"], show=True)
    assert list(c) == ["steps", "beta", "method", "show"]
    assert isinstance(c["steps"], widgets.IntSlider)
    assert (c["steps"].min, c["steps"].max, c["steps"].step, c["steps"].value) == (1, 100, 1, 10)
    assert isinstance(c["beta"], widgets.FloatSlider) and c["beta"].value == 0.5
    assert isinstance(c["method"], widgets.Dropdown) and c["method"].value == "ddpm"
    assert isinstance(c["show"], widgets.Checkbox) and c["show"].value is True
    assert all(w.description == name for name, w in c.items())


def test_controls_keep_given_widgets_and_set_continuous_update():
    log = widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0)
    toggle = widgets.ToggleButtons(options=["a", "b"], description="mode")
    c = cw.controls_from_spec(continuous_update=False, lr=log, kind=toggle, t=(0, 9, 1, 0))
    assert c["lr"] is log and log.description == "lr" and toggle.description == "mode"
    assert c["t"].continuous_update is False


@pytest.mark.parametrize("spec, error, match", [
    ((0, 1, 0.1), ValueError, r"control 'x' must be a tuple \(min, max, step, default\)"),
    ((0, 1, 0.1, 2), ValueError, "control 'x' needs min < max"),
    ((0, 1, 0, 0), ValueError, "step > 0"),
    ([], ValueError, "control 'x' is an empty list"),
    ("fast", TypeError, "control 'x' must be an ipywidgets control"),
])
def test_controls_reject_bad_specs(spec, error, match):
    with pytest.raises(error, match=match):
        cw.controls_from_spec(x=spec)


# ---------------------------------------------------------------- slider_plot

def test_slider_plot_draws_defaults_then_redraws_on_change(monkeypatch, shown):
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    draw, calls = _recording_draw()
    box = cw.slider_plot(draw, a=(0.0, 2.0, 0.5, 1.0), method=["ddpm", "ddim"])
    assert calls == [{"a": 1.0, "method": "ddpm"}]
    controls, out = box.children
    assert isinstance(out, widgets.Output) and len(controls.children) == 2
    controls.children[0].value = 1.5
    controls.children[1].value = "ddim"
    assert calls[1:] == [{"a": 1.5, "method": "ddpm"}, {"a": 1.5, "method": "ddim"}]
    assert box in shown and sum(isinstance(o, Figure) for o in shown) == 3
    assert plt.get_fignums() == []  # every figure shown was closed


def test_slider_plot_static_mode_renders_defaults_as_cell_output(monkeypatch, shown, capsys):
    monkeypatch.setenv("COURSE_STATIC", "1")
    draw, calls = _recording_draw()
    cw.slider_plot(draw, continuous_update=False, a=(0, 10, 1, 3))
    assert calls == [{"a": 3, "method": "ddpm"}] * 2  # widget area + static copy
    assert isinstance(shown[-1], Figure) and shown[-1].axes[0].lines[0].get_ydata()[1] == 3
    assert "static render at the default values: a=3" in capsys.readouterr().out
    assert plt.get_fignums() == []


def test_slider_plot_closes_figures_when_draw_fails(monkeypatch, shown):
    monkeypatch.delenv("COURSE_STATIC", raising=False)

    def draw(a):
        plt.subplots()
        raise RuntimeError("broken draw")
    with pytest.raises(RuntimeError, match="broken draw"):  # outside a kernel: not swallowed
        cw.slider_plot(draw, a=(0, 1, 1, 0))
    assert plt.get_fignums() == []


def test_slider_plot_rejects_non_callable():
    with pytest.raises(TypeError, match="draw must be callable"):
        cw.slider_plot("draw", a=(0, 1, 1, 0))


def test_widget_is_displayed_once_per_cell(monkeypatch, shown):
    class Shell:
        execution_count = 7
    monkeypatch.setattr(cw, "get_ipython", lambda: Shell)
    box = cw._ShownOncePerCell([])
    box._ipython_display_()
    box._ipython_display_()  # e.g. Jupyter showing the returned value of the cell's last line
    assert len(shown) == 1 and WIDGET_VIEW in shown[0]
    Shell.execution_count = 8
    box._ipython_display_()  # shown again on purpose in a later cell
    assert len(shown) == 2


# ---------------------------------------------------------------- headless kernel

def _outputs(cell, key):
    return [o for o in cell.outputs if key in o.get("data", {})]


def test_headless_notebook_keeps_a_static_image(monkeypatch):
    monkeypatch.setenv("COURSE_STATIC", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let the kernel use the inline backend
    code = ["import os\nimport matplotlib.pyplot as plt\n"
            "from course_lib.widgets import slider_plot\n"
            "def draw(a):\n    plt.plot([0, 1], [0, a])",
            "slider_plot(draw, a=(0.0, 1.0, 0.1, 0.5))",
            "os.environ['COURSE_STATIC'] = '0'\nslider_plot(draw, a=(0.0, 1.0, 0.1, 0.5))",
            "len(plt.get_fignums())"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in code])
    NotebookClient(nb, kernel_name="python3", timeout=60).execute(cwd=str(REPO))
    static, live, open_figs = nb.cells[1], nb.cells[2], nb.cells[3]
    assert len(_outputs(static, "image/png")) == 1 and len(_outputs(static, WIDGET_VIEW)) == 1
    assert any("static render" in o.get("text", "") for o in static.outputs)
    assert _outputs(live, "image/png") == [] and len(_outputs(live, WIDGET_VIEW)) == 1
    assert open_figs.outputs[0]["data"]["text/plain"] == "0"
