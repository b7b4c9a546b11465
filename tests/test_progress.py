"""Progress bars in an executed notebook: a finished bar leaves no stale "0%" behind in the saved file."""

import nbformat
import pytest

from course_lib.progress import progress_bar

CELLS = [
    "from course_lib.progress import progress_bar\n"
    "for _ in progress_bar(range(3), desc='finished-bar'):\n    pass\nprint('after the loop')",
    "bar = progress_bar(range(5), desc='stopped-bar')\nfor i in bar:\n    if i == 2:\n        break\nbar.close()",
    "for _ in progress_bar(range(2), desc='kept-bar', leave=True):\n    pass",
    "m = progress_bar(total=4, desc='manual-bar')\nm.update(4)\nm.close()",
]


def _texts(cell) -> str:
    """Every piece of text a viewer without widgets would show for this cell."""
    out = []
    for o in cell.outputs:
        out.append(o.get("text", ""))
        out.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.fixture(scope="module")
def executed():
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb.cells


def test_a_finished_bar_leaves_nothing_in_the_saved_notebook(executed):
    text = _texts(executed[0])
    assert "after the loop" in text and "finished-bar" not in text, text
    assert "manual-bar" not in _texts(executed[3])  # a bar driven by update() and close() too


def test_a_stopped_bar_and_a_kept_bar_stay(executed):
    # an early stop keeps its bar (where the loop stopped is worth seeing); leave=True keeps it by request
    assert "stopped-bar" in _texts(executed[1]) and "2/5" in _texts(executed[1])
    assert "kept-bar" in _texts(executed[2]) and "2/2" in _texts(executed[2])


def test_outside_a_notebook_it_is_tqdm_text_bar(capsys):
    from tqdm import tqdm as text_tqdm

    bar = progress_bar(range(3), desc="plain")
    assert isinstance(bar, text_tqdm) and list(bar) == [0, 1, 2]
    assert progress_bar(range(2), desc="off", disable=True).disable
