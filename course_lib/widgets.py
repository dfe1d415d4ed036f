"""Sliders driving a matplotlib picture, which also leave a picture behind when run headless.

`slider_plot(draw, beta=(0.0, 1.0, 0.05, 0.5), method=["ddpm", "ddim"])` shows the controls
above an output area (through `ipywidgets.interactive_output`) and redraws on every change.

Executed headless (CI with nbval, `jupyter nbconvert --execute`), widget outputs are not
saved as images, so a reader of the executed notebook would see nothing. When the environment
variable COURSE_STATIC is "1" (the test suite and the grading command set it) `slider_plot`
also draws once at the default values as an ordinary cell output, with a one-line caption.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import display

STATIC_ENV = "COURSE_STATIC"

Control = widgets.ValueWidget | widgets.fixed


def is_static() -> bool:
    """True when pictures must also be rendered statically: COURSE_STATIC == "1"."""
    return os.environ.get(STATIC_ENV) == "1"


# ---------------------------------------------------------------- controls

def _is_number(v: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _slider(name: str, spec: tuple, continuous_update: bool) -> widgets.ValueWidget:
    """IntSlider (all four ints) or FloatSlider from the shorthand (min, max, step, default)."""
    if len(spec) != 4 or not all(map(_is_number, spec)):
        raise ValueError(f"control {name!r} must be a tuple (min, max, step, default) of "
                         f"numbers, got {spec!r}")
    lo, hi, step, default = spec
    if not (lo < hi and step > 0 and lo <= default <= hi):
        raise ValueError(f"control {name!r} needs min < max, step > 0 and "
                         f"min <= default <= max, got {spec!r}")
    cast, cls = ((int, widgets.IntSlider) if all(isinstance(v, numbers.Integral) for v in spec)
                 else (float, widgets.FloatSlider))
    return cls(min=cast(lo), max=cast(hi), step=cast(step), value=cast(default),
               continuous_update=continuous_update, style={"description_width": "initial"})


def _control(name: str, spec: Any, continuous_update: bool) -> Control:
    """One control from its spec: a widget, a (min, max, step, default) tuple, a list, a bool."""
    if isinstance(spec, (widgets.ValueWidget, widgets.fixed)):
        control = spec
    elif isinstance(spec, tuple):
        control = _slider(name, spec, continuous_update)
    elif isinstance(spec, list):
        if not spec:
            raise ValueError(f"control {name!r} is an empty list; give at least one option")
        control = widgets.Dropdown(options=spec, style={"description_width": "initial"})
    elif isinstance(spec, bool):
        control = widgets.Checkbox(value=spec)
    else:
        raise TypeError(f"control {name!r} must be an ipywidgets control, a tuple "
                        f"(min, max, step, default), a list of options or a bool; "
                        f"got {type(spec).__name__}")
    if hasattr(control, "description") and not control.description:
        control.description = name
    return control


def controls_from_spec(*, continuous_update: bool = True, **spec: Any) -> dict[str, Control]:
    """Widgets from shorthands, one per keyword, keeping the keyword order.

    - an ipywidgets control (IntSlider, FloatLogSlider, Dropdown, ...) or `ipywidgets.fixed`:
      used as is (its description set to the name if empty);
    - a tuple `(min, max, step, default)`: IntSlider if all four are ints, else FloatSlider,
      with the given `continuous_update` (False: redraw only when the slider is released);
    - a list of options: Dropdown, the first option selected;
    - a bool: Checkbox.
    """
    return {name: _control(name, s, continuous_update) for name, s in spec.items()}


# ---------------------------------------------------------------- drawing

def _drawn_figures(before: set[int]) -> list[int]:
    """Numbers of the figures made since `before`; if none, the current figure (if any)."""
    new = [num for num in plt.get_fignums() if num not in before]
    return new or ([plt.gcf().number] if plt.get_fignums() else [])


def _render(draw: Callable[..., Any], values: dict[str, Any]) -> None:
    """Call draw(**values), display the figures it drew, then close them (even on error)."""
    before = set(plt.get_fignums())
    try:
        draw(**values)
        for num in _drawn_figures(before):
            display(plt.figure(num))
    finally:
        for num in _drawn_figures(before):
            plt.close(num)


def _caption(values: dict[str, Any]) -> str:
    """'(static render at the default values: a=0.5, b='x'; move the sliders ...)'."""
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
                      for k, v in values.items())
    return f"(static render at the default values: {shown}; move the sliders in a live notebook)"


class _ShownOncePerCell(widgets.VBox):
    """A VBox that Jupyter displays at most once per cell execution.

    `slider_plot` displays its widget itself and also returns it; when the call is the last
    line of a cell, Jupyter would display the returned widget a second time.
    """

    def _ipython_display_(self) -> None:
        cell = getattr(get_ipython(), "execution_count", None)
        if cell is not None and cell == getattr(self, "_shown_in_cell", None):
            return
        self._shown_in_cell = cell
        display(self._repr_mimebundle_(), raw=True)


def slider_plot(draw: Callable[..., Any], /, *, continuous_update: bool = True,
                **controls: Any) -> widgets.VBox:
    """Display controls above a picture that `draw(**values)` redraws on every change.

    `draw` draws with pyplot (into the current figure, or a figure it makes, e.g. with the
    `course_lib.plotting` functions); each call's figures are shown, then closed. Controls are
    given as in `controls_from_spec`. In static mode (`is_static()`), the picture at the
    default values is also drawn as a plain cell output, with a caption, so that it survives
    headless execution; `draw` then runs twice on creation (widget area + static copy).
    Returns the displayed widget (its `children` are the control box and the output area).
    """
    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    controls = controls_from_spec(continuous_update=continuous_update, **controls)
    out = widgets.interactive_output(lambda **values: _render(draw, values), controls)
    shown = [c for c in controls.values() if isinstance(c, widgets.Widget)]
    box = _ShownOncePerCell([widgets.VBox(shown), out])
    display(box)
    if is_static():
        values = {name: c.value for name, c in controls.items()}
        _render(draw, values)
        print(_caption(values))
    return box
