"""Figures, tables and downloads: every figure keeps the size vitlens draws it at and downloads as PNG with its
numbers as CSV or JSON; long loops show a progress bar."""
from __future__ import annotations

import html
import json
import re
from typing import Any, Callable, Iterable, Iterator, Mapping

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from vitlens.analysis.figures import fit_width, jsonable


def literal(text: object) -> str:
    """``text`` as a Markdown code span, so that Streamlit shows it character for character.

    Streamlit renders the bodies of st.error, st.warning, st.info, captions, headers, labels and progress texts as
    Markdown, with its extensions: images and links (also bare URLs: GFM autolinks survive backslash escapes),
    emphasis, LaTeX, colour directives and emoji. Inside a code span none of them applies, and raw HTML is shown as
    text, so whatever a visitor typed or named a file is shown, never rendered. Hand-written because neither
    Streamlit nor a Markdown library offers it: the span's backtick fence must be longer than any run of backticks
    inside, and line breaks (which could end the paragraph, and the span with it) become spaces.

    Args:
        text: a source typed in a text box, an upload's file name, or a message that quotes either.
    """
    text = re.sub(r"[\r\n]+", " ", str(text)) or " "  # a code span cannot be empty; one of spaces is kept as is
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    # CommonMark strips one space from each end of a span that starts and ends with one (unless it is all spaces):
    # pad so that the text keeps its own, and so that a backtick at either end is not read as part of the fence
    ends = text[0] + text[-1]
    pad = " " if "`" in ends or (ends == "  " and text.strip(" ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def title_text(text: object) -> str:
    """``text`` for a Plotly title: Plotly renders a few HTML tags there (``<a href>``, ``<b>``, ``<br>``...), so
    its ``<``, ``>`` and ``&`` are escaped (quotes are harmless outside a tag, and Plotly would show ``&quot;``)."""
    return html.escape(str(text), quote=False)


def with_progress(batches: Iterable, total: int, label: str) -> Iterator:
    """Yield ``batches`` while an st.progress bar counts them."""
    bar = st.progress(0.0, text=label)
    for i, b in enumerate(batches, start=1):
        yield b
        bar.progress(min(i / total, 1.0), text=f"{label}: {i}/{total}")
    bar.empty()


def top_k(logits: torch.Tensor, names: list[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` most probable classes of one image: ``class``, ``index``, ``probability``."""
    probs = logits.softmax(-1)[0]
    p, i = probs.topk(min(k, len(names)))
    return pd.DataFrame({"class": [names[j] for j in i.tolist()], "index": i.tolist(),
                         "probability": p.tolist()})


def downloads(fig: go.Figure, name: str, numbers: Mapping[str, Any] | pd.DataFrame, key: str) -> None:
    """PNG of the figure (rendered by kaleido only when clicked) and its numbers as CSV or JSON."""
    left, right = st.columns(2)
    left.download_button("PNG", lambda: fig.to_image(format="png", scale=2), file_name=f"{name}.png",
                         mime="image/png", key=f"{key}_png", icon=":material/download:", on_click="ignore")
    if isinstance(numbers, pd.DataFrame):
        right.download_button("CSV", numbers.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                              key=f"{key}_csv", icon=":material/download:", on_click="ignore")
    else:
        right.download_button("JSON", json.dumps(jsonable(numbers), indent=1), file_name=f"{name}.json",
                              mime="application/json", key=f"{key}_json", icon=":material/download:",
                              on_click="ignore")


def show(fig: go.Figure, name: str, numbers: Mapping[str, Any] | pd.DataFrame, key: str,
         on_select: Callable | str = "ignore", width: int | None = None, **kwargs: Any) -> Any:
    """A figure at the size vitlens draws it (PNG from the toolbar too), or redrawn ``width`` px wide (a column of
    two: ``HALF_WIDTH``) with its title wrapped again, followed by its download buttons."""
    if width:  # Streamlit would narrow a wider figure to the column without wrapping its title, which it then cuts
        fit_width(fig, width)
    # theme=None: the figure as vitlens.analysis.figures draws it (and as its PNG export looks)
    event = st.plotly_chart(fig, width="content", key=key, on_select=on_select, theme=None,
                            config={"toImageButtonOptions": {"filename": name, "scale": 2}}, **kwargs)
    downloads(fig, name, numbers, key)
    return event


def finding(text: str) -> None:
    """What the paper found and what this model shows (:mod:`vitlens.analysis.findings`), under its figure."""
    st.markdown(f"**The finding.** {text}")
