"""The app under load: concurrent browser sessions (Debian chromium via playwright) on `vitlens app` at 127.0.0.1,
each switching for a fixed time between the bundled ViTs and several images (sample photos, and uploads with
different digests) on the Attention page. Reports the time from each action to the rollout figure drawn for it
(p50/p95) and the server's memory: its peak, and whether it stays flat once every model and image has been seen
(a warm-up pass shows every pair first; then the peak of the timed run's second half is compared with its first).

Run: python analyses/benchmarks/bench_app_load.py [--sessions 10] [--seconds 90]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from playwright.async_api import Page, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))
from common import write_result  # noqa: E402
from harness import CHROMIUM, RUNNING, STALE, UPLOAD_INPUT, app_process, photo  # noqa: E402

from vitlens.images import SAMPLE_PHOTOS  # noqa: E402

MODELS = ("demo:vit-fashion", "demo:vit-fashion-ft")  # the bundled ViTs; the first is the app's default
UPLOADS = {f"upload{i}.jpg": photo("chelsea", "JPEG", file_name=f"upload{i}.jpg", seed=i) for i in range(3)}
ACTION_TIMEOUT_MS = 180_000
FLAT_TOLERANCE = 0.05  # the second half's peak may exceed the first's by this fraction and still count as flat


@dataclass
class Session:
    """One browser tab: the model and image it shows, and whether its image input is on Upload."""

    page: Page
    rng: random.Random
    model: str = MODELS[0]
    image: str = SAMPLE_PHOTOS[0]
    uploading: bool = False
    times: dict[str, list[float]] = field(default_factory=lambda: {"model": [], "photo": [], "upload": []})
    errors: list[str] = field(default_factory=list)


async def choose(page: Page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox whose label starts with ``label``."""
    await page.locator("[data-testid='stSelectbox']", has_text=label).click()
    await page.get_by_role("option", name=option, exact=True).click()


async def shown(page: Page, model: str, *images: str) -> str:
    """Wait for the rollout figure of this model on one of these images; which one it shows."""
    title = re.compile(rf"^Attention rollout: {re.escape(model)} on ({'|'.join(map(re.escape, images))})$")
    found = page.locator(".js-plotly-plot .gtitle", has_text=title)
    await found.wait_for(timeout=ACTION_TIMEOUT_MS)
    return title.match(await found.text_content()).group(1)


async def move(s: Session, kind: str, target: str | None = None) -> float:
    """One action that changes the model or the image shown; seconds from it to the figure drawn for it.

    Args:
        s: the session.
        kind: ``model`` (the other bundled ViT), ``photo`` (a sample photo; from Upload, the radio back to the
            photos, which shows the first photo, or the last one shown where Streamlit kept the box's state) or
            ``upload`` (a file; from the photos, the radio to Upload first, which draws no figure and is not timed).
        target: the photo or upload file name; default: a random one other than the one shown.
    """
    if kind == "upload" and not s.uploading:
        await s.page.get_by_text("Upload", exact=True).first.click()
        await s.page.locator(UPLOAD_INPUT).wait_for(state="attached", timeout=ACTION_TIMEOUT_MS)
        s.uploading, s.image = True, ""
    start = time.perf_counter()
    expected = [s.image]
    if kind == "model":
        s.model = next(m for m in MODELS if m != s.model)
        await choose(s.page, "Bundled model", s.model)
    elif kind == "upload":
        expected = [target or s.rng.choice([u for u in UPLOADS if u != s.image])]
        await s.page.locator(UPLOAD_INPUT).set_input_files(UPLOADS[expected[0]])
    elif s.uploading:
        await s.page.get_by_text("Sample photo", exact=True).first.click()
        s.uploading, expected = False, SAMPLE_PHOTOS
    else:
        expected = [target or s.rng.choice([p for p in SAMPLE_PHOTOS if p != s.image])]
        await choose(s.page, "Photo (scikit-image samples)", expected[0])
    s.image = await shown(s.page, s.model, *expected)
    seconds = time.perf_counter() - start
    # then, as a user reading the page would, wait for the rest of the run (a widget changed while the script runs
    # can be lost when the run ends)
    await s.page.locator(RUNNING).wait_for(state="detached", timeout=ACTION_TIMEOUT_MS)
    await s.page.locator(STALE).first.wait_for(state="detached", timeout=ACTION_TIMEOUT_MS)
    return seconds


async def open_session(s: Session, url: str) -> None:
    """The Attention page, fresh: the default model on the first sample photo."""
    s.model, s.image, s.uploading = MODELS[0], SAMPLE_PHOTOS[0], False
    await s.page.goto(f"{url}/attention", timeout=ACTION_TIMEOUT_MS)
    await shown(s.page, s.model, s.image)


async def warm_up(s: Session) -> None:
    """Every model on every image once, so that the timed run starts with every model and image seen."""
    for i, _ in enumerate(MODELS):
        if i:
            await move(s, "model")
        for target in SAMPLE_PHOTOS:
            if target != s.image:
                await move(s, "photo", target)
        for target in UPLOADS:
            await move(s, "upload", target)
        await move(s, "photo")  # back to the photos, for the next model


async def run_session(s: Session, url: str, deadline: float) -> None:
    """Random actions until the deadline; a stuck one is counted and the session starts over on a fresh page (or
    ends, if that fails too)."""
    while time.monotonic() < deadline:
        kind = s.rng.choice(list(s.times))
        try:
            s.times[kind].append(await move(s, kind))
        except Exception as e:
            s.errors.append(f"{kind}: {type(e).__name__}: {str(e).splitlines()[0]}")
            try:
                await open_session(s, url)
            except Exception as e:
                s.errors.append(f"reopening: {type(e).__name__}: {str(e).splitlines()[0]}")
                return


def memory_kb(pid: int) -> dict[str, int]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM), in kB, as the kernel counts them."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used (user + system), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after the command name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


async def sample_rss(pid: int, samples: list[tuple[float, int]], every_s: float = 0.5) -> None:
    while True:
        samples.append((time.monotonic(), memory_kb(pid)["VmRSS"]))
        await asyncio.sleep(every_s)


def summary(times: list[float]) -> dict:
    return dict(count=len(times), p50_s=float(np.percentile(times, 50)) if times else None,
                p95_s=float(np.percentile(times, 95)) if times else None)


async def load(url: str, pid: int, sessions: int, seconds: float, seed: int) -> dict:
    """Warm up in one session, open the others, then all of them act at once for ``seconds``."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(**CHROMIUM)
        tabs = [Session(await browser.new_page(viewport={"width": 1400, "height": 1600}), random.Random(seed + i))
                for i in range(sessions)]  # new_page: each in a context of its own (no shared cookies)
        await open_session(tabs[0], url)
        await warm_up(tabs[0])
        await asyncio.gather(*(open_session(s, url) for s in tabs[1:]))
        after_warm_up = memory_kb(pid)["VmRSS"]
        samples: list[tuple[float, int]] = []
        sampler = asyncio.create_task(sample_rss(pid, samples))
        start, cpu = time.monotonic(), cpu_seconds(pid)
        await asyncio.gather(*(run_session(s, url, start + seconds) for s in tabs))
        sampler.cancel()
        wall, cpu = time.monotonic() - start, cpu_seconds(pid) - cpu
        await browser.close()
    middle = start + seconds / 2
    first, second = (max(kb for t, kb in samples if (t < middle) == half) for half in (True, False))
    times = {kind: [t for s in tabs for t in s.times[kind]] for kind in tabs[0].times}
    return dict(all_actions=summary([t for ts in times.values() for t in ts]),
                by_action={kind: summary(ts) for kind, ts in times.items()},
                errors=[e for s in tabs for e in s.errors],
                # how much of the machine the server had: the browsers' renderers share the same cores
                server_cpu_s=cpu, wall_s=wall, cpu_cores=os.cpu_count(),
                memory_mb=dict(peak=memory_kb(pid)["VmHWM"] / 1024, after_warm_up=after_warm_up / 1024,
                               peak_first_half=first / 1024, peak_second_half=second / 1024,
                               flat=second <= first * (1 + FLAT_TOLERANCE)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with app_process() as (server, url):
        result = asyncio.run(load(url, server.pid, args.sessions, args.seconds, args.seed))
    done = result["all_actions"]
    print(f"{args.sessions} sessions, {args.seconds:.0f} s: {done['count']} actions, p50 {done['p50_s']:.2f} s, "
          f"p95 {done['p95_s']:.2f} s, {len(result['errors'])} errors; server memory peak "
          f"{result['memory_mb']['peak']:.0f} MB, flat: {result['memory_mb']['flat']}")
    # the browsers, the server and anything else running share the cores: say how busy the machine was
    write_result("app_load", dict(
        metric="seconds from an action (model or image switched) to its rollout figure in chromium, on the Attention "
               "page, with every session acting at once", sessions=args.sessions, seconds=args.seconds,
        models=list(MODELS), images=[*SAMPLE_PHOTOS, *UPLOADS], flat_tolerance=FLAT_TOLERANCE,
        load_average_1_5_15min=os.getloadavg(), **result))


if __name__ == "__main__":
    main()
