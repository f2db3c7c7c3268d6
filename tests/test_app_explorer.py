"""The app's Attention explorer page through streamlit.testing: its defaults, an uploaded photo and each control
changed once, with no exception; the grid names layers and heads from 1 and the page embeds the explorer."""
from __future__ import annotations

import json

from test_app import PHOTO, figures, ok, open_page, upload

from vitlens.analysis.explore import NUMBERING


def frames(at) -> list[str]:
    """The HTML of each st.iframe on the page."""
    return [e.proto.srcdoc for e in at.get("iframe")]


def test_explorer_page_defaults_upload_and_every_control():
    at = open_page("explorer")
    assert figures(at) == 1 and len(frames(at)) == 1
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    ticks = (spec["layout"]["xaxis"]["ticktext"], spec["layout"]["yaxis"]["ticktext"])
    assert ticks == ([f"head {h}" for h in (1, 2, 3)], [f"layer {l}" for l in range(1, 7)])  # demo:vit-fashion
    assert "demo:vit-fashion on astronaut" in spec["layout"]["title"]["text"]
    assert NUMBERING in frames(at)[0] and '"show_grid": false' in frames(at)[0]  # the app draws its own grid
    at = ok(upload(at, "explore", PHOTO))
    assert any("outside its domain" in w.value for w in at.warning)
    assert "on chelsea.jpg" in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    ok(at.toggle(key="explore_shared").set_value(False).run())
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"][2]["marker"]["colorbar"]["title"]["text"] == \
        "attention / map max"
    ok(at.selectbox(key="explore_fusion").set_value("max").run())
    assert '"head_fusion": "max"' in frames(at)[0] and figures(at) == 1
    at.radio(key="explore_kind").set_value("Fashion-MNIST test image").run()
    ok(at.number_input(key="explore_fashion").set_value(3).run())
    assert not any("outside its domain" in w.value for w in at.warning) and len(frames(at)) == 1
