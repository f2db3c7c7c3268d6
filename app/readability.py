"""Readability of the app's figures as a browser lays them out at 1400 x 1000: each map panel's width, the empty
band under each title, titles cut by the figure's edge, and labels that overlap. Shared by the readability test and
the screenshots (tooling around the app, not part of it)."""
from __future__ import annotations

from playwright.sync_api import Page

# For every Plotly figure on the page: its title, the narrowest panel that draws an image or heatmap, the gap between
# the title's bottom and the top of what is under it (plot areas and subplot titles), whether the title is cut by the
# figure's edges, and pairs of text boxes (titles, subplot titles, tick and axis labels, legend) that overlap.
MEASURE = """
() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  const title = gd.querySelector('.gtitle'), t = title ? title.getBoundingClientRect() : null;
  const mapAxes = new Set(gd._fullData.filter(d => d.type === 'image' || d.type === 'heatmap')
                                       .map(d => d.xaxis || 'x'));
  const widths = [...mapAxes].map(a => fl[a === 'x' ? 'xaxis' : 'xaxis' + a.slice(1)]._length);
  const tops = Object.keys(fl).filter(k => /^yaxis\\d*$/.test(k)).map(k => box.top + fl[k]._offset);
  const below = [...tops, ...[...gd.querySelectorAll('.annotation')].map(a => a.getBoundingClientRect().top)];
  const texts = [...gd.querySelectorAll('.gtitle, .annotation-text, .xtick text, .ytick text, .xtitle, .ytitle, .legendtext')]
      .map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
  let overlaps = 0;
  for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
    const a = texts[i], b = texts[j];
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) overlaps++;
  }
  return {title: title ? title.textContent : '', minMapWidth: widths.length ? Math.min(...widths) : null,
          gap: t && below.length ? Math.min(...below) - t.bottom : null,
          cut: t ? (t.left < box.left - 1 || t.right > box.right + 1) : false, overlaps};
})
"""


def measure(page: Page) -> list[dict]:
    """The readability numbers of every Plotly figure on the page (see :data:`MEASURE`)."""
    return page.evaluate(MEASURE)
