"""Readable by default (issue #15, point 2): every page of the app with its defaults, in chromium at 1400 x 1000, the
layout the browser made of each figure measured by app/readability.py: map panels at least 200 px wide, no empty
band over 40 px under a title, no title cut by the figure's edge, no two text boxes overlapping."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app"))
from harness import CHROMIUM, idle, running_app  # noqa: E402
from readability import measure  # noqa: E402

MIN_MAP_PX, MAX_GAP_PX = 200, 40
# page path, the button its figures wait behind (None: drawn on opening), how many figures it draws with defaults
PAGES = [("", None, 0), ("attention", None, 4), ("explorer", None, 1), ("posembed", None, 3),
         ("distance", None, 2), ("norms", None, 3), ("compare", None, 2), ("probe", "Run the probes", 2),
         ("bias", "Run the probes", 5)]


def settled(page: Page, count: int, timeout_ms: float = 120_000) -> list[dict]:
    """The measurements once the page holds ``count`` figures and two measurements in a row, half a second apart,
    agree: plotly draws after the script's run ends."""
    last, waited = None, 0
    while waited < timeout_ms:
        now = measure(page)
        if now == last and len(now) >= count:
            return now
        last, waited = now, waited + 500
        page.wait_for_timeout(500)
    raise AssertionError(f"the figures did not settle: {last}")


def visit(page: Page, url: str, path: str, button: str | None, count: int) -> list[dict]:
    page.goto(f"{url}/{path}", timeout=180_000)
    idle(page, 300_000)
    if button:
        page.get_by_role("button", name=button).click(timeout=180_000)
        idle(page, 600_000)
    return settled(page, count)


def test_every_figure_on_every_page_is_readable_at_1400_by_1000():
    found, faults = {}, []
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path, button, count in PAGES:
            found[path or "model"] = figures = visit(page, url, path, button, count)
            assert len(figures) == count, (path, figures)
            for m in figures:
                where = f"{path or 'model'}: {m['title'][:60]!r}"
                if m["minMapWidth"] is not None and m["minMapWidth"] < MIN_MAP_PX:
                    faults.append(f"{where} map panel {m['minMapWidth']:.0f} px wide")
                if m["gap"] is not None and m["gap"] > MAX_GAP_PX:
                    faults.append(f"{where} {m['gap']:.0f} px empty under the title")
                if m["cut"]:
                    faults.append(f"{where} title cut by the figure's edge")
                if m["overlaps"]:
                    faults.append(f"{where} {m['overlaps']} overlapping text boxes")
        browser.close()
    print(json.dumps(found, indent=1))
    assert faults == [], "\n".join(faults)
