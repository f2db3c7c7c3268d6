"""The README's app screenshots (docs/app_*.png): each page on the bundled models, in Debian's chromium.

Run: python app/screenshots.py [--out docs] [--only app_inductive_biases.png ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from harness import CHROMIUM, idle, running_app

ROOT = Path(__file__).resolve().parent.parent
# page path, what to click first (an image input to choose, or a button; None: nothing), window height (Streamlit
# scrolls inside the page, so the window must hold what is shown), file name
SHOTS = [("attention", "Fashion-MNIST test image", 2000, "app_attention.png"),
         ("attention", "Sample photo", 1100, "app_attention_photo.png"),
         ("explorer", "Sample photo", 1600, "app_attention_explorer.png"),
         ("compare", "Fashion-MNIST test image", 1900, "app_vit_vs_cnn.png"),
         ("posembed", None, 1900, "app_position_embeddings.png"),
         ("distance", None, 1000, "app_attention_distance.png"),
         ("norms", "Sample photo", 2300, "app_high_norm_tokens.png"),
         ("", None, 900, "app_model.png"),
         ("bias", "Run the probes", 2400, "app_inductive_biases.png")]


def shoot(page: Page, url: str, path: str, click: str | None, height: int, out: Path) -> None:
    page.set_viewport_size({"width": 1500, "height": height})
    page.goto(f"{url}/{path}", timeout=180_000)
    idle(page, 300_000)
    if click:
        page.get_by_text(click, exact=True).first.click(timeout=180_000)
        idle(page, 300_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(6000)  # plotly draws its heatmaps after the run ends, slowly on a busy machine
    page.screenshot(path=out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--only", nargs="+", metavar="FILE", help="just these screenshots (file names)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        page = browser.new_page()
        for path, click, height, name in SHOTS:
            if not args.only or name in args.only:
                shoot(page, url, path, click, height, args.out / name)
        browser.close()


if __name__ == "__main__":
    main()
