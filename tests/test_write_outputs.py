"""`write_outputs`, which every `vitlens analyze` command ends with: HTML, PNG and JSON, each whole or not at all."""
import json

import plotly.graph_objects as go
import pytest
from PIL import Image

from vitlens.analysis.figures import write_outputs


def figure(title: str) -> go.Figure:
    return go.Figure(go.Heatmap(z=[[0, 1, 2], [3, 4, 5]]), layout=dict(title=title, width=300, height=200))


def test_every_file_is_written_whole_and_nothing_partial_is_left(tmp_path):
    written = write_outputs(tmp_path, {"a": figure("first"), "b": figure("second")}, {"x": 1})
    assert sorted(p.name for p in written) == ["a.html", "a.json", "a.png", "b.html", "b.png"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert Image.open(tmp_path / "b.png").size == (450, 300)  # the layout's size at scale 1.5
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_write_that_fails_half_way_leaves_the_previous_file(tmp_path, monkeypatch):
    write_outputs(tmp_path, {"a": figure("first")}, {"x": 1}, png=False)
    before = (tmp_path / "a.html").read_text()

    def half_then_fail(self, path, **kwargs):
        with open(path, "w") as f:
            f.write("<html>half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(go.Figure, "write_html", half_then_fail)
    with pytest.raises(OSError, match="a.html"):
        write_outputs(tmp_path, {"a": figure("second")}, {"x": 2}, png=False)
    assert (tmp_path / "a.html").read_text() == before
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
