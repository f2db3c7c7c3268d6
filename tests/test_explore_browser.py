"""The attention explorer in Debian's chromium (playwright): the page `vitlens analyze explore` writes, opened from
disk with the network off, driven by hover, click and the layer chooser, its maps read back from the canvases and
compared with the library's; and the app's Attention explorer page."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from playwright.sync_api import Frame, Page, sync_playwright
from test_analysis_explore import captured, small_vit

import vitlens
from vitlens.analysis import head_maps, patch_maps
from vitlens.images import photo, prepare

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app"))
from harness import CHROMIUM, idle, running_app  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"
MARK = (224, 17, 95)  # the marker's colour (#e0115f)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The page the command writes for a 3-layer, 4-head ViT on a 3 x 5 grid, and the attention it shows."""
    d = tmp_path_factory.mktemp("explore")
    vitlens.save_model(small_vit(), d / "vit.safetensors")
    out = d / "explorer.html"
    subprocess.run([sys.executable, "-m", "vitlens.cli", "analyze", "explore", "--model", str(d / "vit.safetensors"),
                    "--image", "chelsea", "--out", str(out)], check=True, capture_output=True, timeout=300)
    model = vitlens.load_model(d / "vit.safetensors").eval()
    attentions = captured(model, prepare(photo("chelsea", model.data_config), model.data_config))
    return out, attentions, vitlens.token_layout(model)


def shown(where: Page | Frame, selector: str) -> np.ndarray:
    """The values each canvas was drawn from, as the page decoded them from its bytes."""
    return np.array(where.eval_on_selector_all(selector, "cs => cs.map(c => Array.from(c.values))"))


def close(got: np.ndarray, want: torch.Tensor) -> None:
    """Equal within the page's rounding: half a step of 1/255 of each map's maximum (plus float32)."""
    want = want.reshape(got.shape).double().numpy()
    assert np.all(np.abs(got - want) <= want.max(-1, keepdims=True) / 510 + 1e-6)


def centre(where: Page | Frame, selector: str, r: int, c: int, grid: tuple[int, int]) -> tuple[float, float]:
    box = where.locator(selector).first.bounding_box()
    return box["x"] + (c + 0.5) * box["width"] / grid[1], box["y"] + (r + 0.5) * box["height"] / grid[0]


def pixel(page: Page, selector: str, fx: float, fy: float) -> tuple[int, ...]:
    """The RGB of a canvas at fractions (fx, fy) of its width and height."""
    return tuple(page.eval_on_selector(selector, f"""c => Array.from(c.getContext("2d").getImageData(
        Math.floor(c.width * {fx}), Math.floor(c.height * {fy}), 1, 1).data.slice(0, 3))"""))


def test_written_page_offline_hover_click_and_layer_chooser_redraw_the_maps(written):
    path, attentions, layout = written
    (gh, gw), k = layout.grid, layout.num_prefix_tokens
    a = torch.stack([x[0] for x in attentions])  # L x H x N x N
    r, c = 2, 3
    with sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
        page = context.new_page()
        requests, errors = [], []
        page.on("request", lambda req: requests.append(req.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='true']", timeout=60_000)
        # first the class token: its row per layer, heads fused, and per head of the last layer
        before = shown(page, "#layers canvas")
        close(before, torch.stack([head_maps(attentions, layout, layer=l)[0].mean(0) for l in range(3)]))
        close(shown(page, "#heads canvas"), head_maps(attentions, layout, layer=-1)[0])
        close(shown(page, "#grid canvas"), torch.stack([head_maps(attentions, layout, layer=l)[0] for l in range(3)]))
        assert pixel(page, "#main", (c + 0.5) / gw, r / gh) != MARK

        page.mouse.move(*centre(page, "#main", r, c, layout.grid))  # hover patch (3, 4), numbered from 1
        page.wait_for_function("document.getElementById('status').textContent.includes('patch (3, 4) (hovered')")
        hovered = shown(page, "#layers canvas")
        assert np.abs(hovered - before).max() > 1e-3
        close(hovered, patch_maps(attentions, (r, c), layout)[0])
        close(shown(page, "#heads canvas"), a[-1, :, k + r * gw + c, k:])  # every head of the last layer, by hand
        assert pixel(page, "#main", (c + 0.5) / gw, r / gh) == MARK  # the patch is marked on the image

        page.select_option("#layer", "0")  # "layer 1"
        close(shown(page, "#heads canvas"), a[0, :, k + r * gw + c, k:])
        page.mouse.click(*centre(page, "#main", r, c, layout.grid))
        page.mouse.move(5, 990)  # off every map: the clicked patch stays
        page.wait_for_function("document.getElementById('status').textContent.endsWith('patch (3, 4) (kept)')")
        close(shown(page, "#layers canvas"), patch_maps(attentions, (r, c), layout)[0])
        page.mouse.move(*centre(page, "#layers canvas", 0, 1, layout.grid))  # hovering a map works as the image
        page.wait_for_function("document.getElementById('status').textContent.includes('patch (1, 2) (hovered')")
        close(shown(page, "#layers canvas"), patch_maps(attentions, 1, layout)[0])
        page.mouse.move(5, 990)
        page.click("#back")
        close(shown(page, "#layers canvas"), torch.from_numpy(before))

        layout_is_readable(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "explorer_page.png", full_page=True)
        browser.close()
    assert requests == [path.as_uri()] and not errors, (requests, errors)


def layout_is_readable(page: Page) -> None:
    """At 1400 x 1000: every map of the patch view at least 200 px wide; no two labels overlap; no clipped title."""
    widths = page.eval_on_selector_all("#layers canvas, #heads canvas", "cs => cs.map(c => c.clientWidth)")
    assert min(widths) >= 200, widths
    boxes = page.eval_on_selector_all("h1, h2, .cap, .lab, #status", """es => es.map(e => {
        const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom, e.scrollWidth > e.clientWidth];
    })""")
    assert not any(b[4] for b in boxes)
    for i, u in enumerate(boxes):
        for v in boxes[i + 1:]:
            assert u[2] <= v[0] or v[2] <= u[0] or u[3] <= v[1] or v[3] <= u[1], (u, v)


def test_app_page_draws_the_grid_and_its_patch_view_follows_the_mouse():
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/explorer", timeout=180_000)
        grid = page.locator(".js-plotly-plot", has_text="every layer (rows) and head (columns)")
        grid.wait_for(timeout=180_000)
        assert "head 3" in grid.inner_text() and "layer 6" in grid.inner_text()  # demo:vit-fashion: 6 x 3
        idle(page)
        page.locator("iframe").last.scroll_into_view_if_needed()
        frame = next(f for f in page.frames if f.query_selector("#vitlens-explorer-data"))
        frame.wait_for_selector("body[data-ready='true']", timeout=60_000)
        before = shown(frame, "#layers canvas")
        assert before.shape == (6, 49)  # 6 layers, 7 x 7 patches
        page.mouse.move(*centre(frame, "#main", 1, 5, (7, 7)))
        frame.wait_for_function("document.getElementById('status').textContent.includes('patch (2, 6)')")
        assert np.abs(shown(frame, "#layers canvas") - before).max() > 1e-3
        assert min(frame.eval_on_selector_all("#layers canvas", "cs => cs.map(c => c.clientWidth)")) >= 200
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "app_explorer.png")
        browser.close()
