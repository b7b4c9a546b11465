"""Progress bars that leave nothing stale behind.

Every long loop of the course (training, sampling, the evaluator) shows a ``tqdm.auto`` bar
that disappears when it is done (``leave=False``). In a live notebook tqdm hides its widget
then, but the saved notebook keeps the widget's plain-text stand-in as it was when the bar was
first drawn, so a notebook executed headlessly (``course run``, nbconvert) and opened where
widgets do not render (GitHub, a static HTML page) shows "training: 0%| | 0/300" for ever.
:func:`progress_bar` displays the notebook widget under a display id and, once the loop has
finished, replaces that output with nothing. A bar that stopped early (an error, an
interrupt) or was asked to stay (``leave=True``) is displayed again when it closes, so that
its saved text reads where it stopped.
"""

from __future__ import annotations

from typing import Any

_NOTEBOOK_BAR: type | None = None


def _notebook_bar(base: type) -> type:
    """A subclass of tqdm's notebook bar whose output is blanked when it closes complete."""
    global _NOTEBOOK_BAR
    if _NOTEBOOK_BAR is None:
        from IPython.display import display

        class NotebookBar(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any):
                kwargs["display"] = False  # displayed below, with a handle to blank it later
                self._handle = None
                super().__init__(*args, **kwargs)
                if not self.disable and getattr(self, "container", None) is not None:
                    self._handle = display(self.container, display_id=True)
                    self.displayed = True

            def close(self) -> None:
                complete = not self.total or self.n >= self.total
                super().close()
                if self._handle is None:
                    return
                if complete and not self.leave:
                    self._handle.update({"text/plain": ""}, raw=True)
                else:  # shown again: the saved text then reads where it stopped, not its first state
                    self._handle.update(self.container)
                self._handle = None

        _NOTEBOOK_BAR = NotebookBar
    return _NOTEBOOK_BAR


def progress_bar(iterable=None, *, desc: str, total: int | None = None, disable: bool = False, leave: bool = False):
    """``tqdm.auto.tqdm(iterable, desc=, total=, disable=, leave=)``: a widget in a notebook, text in a terminal;
    in a notebook, a finished bar with ``leave=False`` leaves no output in the saved file."""
    from tqdm.auto import tqdm

    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:  # no ipywidgets: tqdm.auto is the text bar anyway
        notebook_tqdm = None
    cls = tqdm
    if notebook_tqdm is not None and isinstance(tqdm, type) and issubclass(tqdm, notebook_tqdm):
        cls = _notebook_bar(tqdm)
    return cls(iterable, desc=desc, total=total, disable=disable, leave=leave)
