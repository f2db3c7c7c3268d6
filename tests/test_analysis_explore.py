"""The attention explorer's numbers (vitlens.analysis.explore) against the captured attention read by hand, on a
vitlens ViT and timm families with registers or without a class token; the page's bytes against the maps;
`vitlens analyze explore` as users run it; vitlens.explore's inputs and its Jupyter frame."""
import base64
import html
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import timm
import torch
from conftest import perturb_

import vitlens
from vitlens.analysis import explore as ex
from vitlens.analysis import head_maps, patch_maps
from vitlens.images import sample_image


def small_vit() -> torch.nn.Module:
    """3 x 5 patches (non-square), 4 heads, weights far enough from init for rows that differ."""
    torch.manual_seed(0)
    return perturb_(vitlens.create_model("vit_ti16", img_size=(24, 40), patch_size=8, embed_dim=32, depth=3,
                                         num_heads=4, mlp_dim=64, num_classes=5), std=0.3).eval()


def captured(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(x)
    return rec.attentions


def hand_reference(a: torch.Tensor, k: int, has_cls: bool, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """From L x H x N x N attention, by index: the class row (index 0) or the mean of the patch rows (k.. N), fused
    by the mean over heads, split into prefix columns (0..k) and the grid (k..N, row-major)."""
    L, H, N, _ = a.shape
    full = torch.cat([a.mean(1, keepdim=True), a], dim=1)  # L x 1+H x N x N
    query = full[:, :, 0] if has_cls else full[:, :, k:].mean(dim=2)
    return dict(query=query[..., k:].reshape(L, H + 1, *grid), query_prefix=query[..., :k],
                rows=full[:, :, k:, k:].reshape(L, H + 1, N - k, *grid), rows_prefix=full[:, :, k:, :k])


def check_against_hand(maps: ex.ExplorerMaps, attentions, k: int, has_cls: bool, grid: tuple[int, int]) -> None:
    want = hand_reference(torch.stack([a[0] for a in attentions]), k, has_cls, grid)
    for name, value in want.items():
        torch.testing.assert_close(getattr(maps, name), value, msg=name)


def test_vitlens_vit_maps_equal_the_attention_read_by_hand_and_head_maps_patch_maps():
    model = small_vit()
    attentions = captured(model, torch.randn(1, 3, 24, 40))
    layout = vitlens.token_layout(model)
    maps = ex.explorer_maps(attentions, layout)
    assert maps.query.shape == (3, 5, 3, 5) and maps.rows.shape == (3, 5, 15, 3, 5) and maps.query_prefix.shape[-1] == 1
    check_against_hand(maps, attentions, k=1, has_cls=True, grid=(3, 5))
    # the same numbers through the library's own per-analysis functions
    for l in range(3):
        torch.testing.assert_close(maps.class_maps[l], head_maps(attentions, layout, layer=l)[0])
    for r, c in [(0, 0), (2, 1), (1, 4)]:
        torch.testing.assert_close(maps.rows[:, 0, r * 5 + c], patch_maps(attentions, (r, c), layout)[0])
    maxed = ex.explorer_maps(attentions, layout, head_fusion="max")
    torch.testing.assert_close(maxed.rows[:, 0, 7], patch_maps(attentions, 7, layout, head_fusion="max")[0])
    torch.testing.assert_close(maxed.rows[:, 1:], maps.rows[:, 1:])  # fusion changes only the fused entry
    assert not (maps.rows[:, 1, 0] - maps.rows[:, 1, 1]).abs().max() < 1e-3  # rows differ: the test can tell them


@pytest.mark.parametrize("name,overrides,k,has_cls", [
    ("vit_small_patch14_reg4_dinov2", dict(img_size=(42, 70)), 5, True),  # class token and 4 registers
    ("vit_base_patch16_rope_reg1_gap_256", dict(embed_dim=96, num_heads=3, img_size=(48, 80)), 1, False),  # reg only
    ("vit_base_patch16_siglip_224", dict(embed_dim=96, num_heads=3, img_size=(48, 80)), 0, False),  # no prefix
])
def test_timm_families_maps_equal_the_attention_read_by_hand(name, overrides, k, has_cls):
    torch.manual_seed(0)
    model = perturb_(timm.create_model(name, pretrained=False, depth=2, **overrides), std=0.05).eval()
    size = overrides["img_size"]
    attentions = captured(model, torch.randn(1, 3, *size))
    layout = vitlens.token_layout(model)
    assert layout.num_prefix_tokens == k
    maps = ex.explorer_maps(attentions, layout)
    check_against_hand(maps, attentions, k, has_cls, layout.grid)
    if k:  # what the registers take: the query's share at their columns, by name in layout.prefix order
        assert maps.query_prefix.shape == (2, maps.num_heads + 1, k) and layout.prefix[-1].startswith("reg")
    fused = ex.explorer_maps(attentions, layout, per_head=False)
    assert fused.rows.shape[1] == 1 and not fused.per_head
    torch.testing.assert_close(fused.rows[:, 0], maps.rows[:, 0])


def test_one_image_at_a_time_and_pages_of_bounded_size(monkeypatch):
    model = small_vit()
    layout = vitlens.token_layout(model)
    with pytest.raises(ValueError, match="one image at a time; got a batch of 2"):
        ex.explorer_maps(captured(model, torch.randn(2, 3, 24, 40)), layout)
    attentions = captured(model, torch.randn(1, 3, 24, 40))
    monkeypatch.setattr(ex, "MAX_EMBEDDED", 3 * 5 * 15 * 15 - 1)  # 3 layers x (1 + 4) x 15 x 15 is one too many
    with pytest.raises(ValueError, match=r"3 layers x 5 maps x 15 x 15 patches.*per_head=False"):
        ex.explorer_maps(attentions, layout)
    assert ex.explorer_maps(attentions, layout, per_head=False).rows.shape[1] == 1


class Refs(HTMLParser):
    """Every attribute that can load something (src, href, srcset...), and the scripts' text."""

    def __init__(self) -> None:
        super().__init__()
        self.refs, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "srcset", "data", "action", "poster")]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def page_data(text: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="vitlens-explorer-data">(.*?)</script>', text,
                                re.S).group(1).replace("<\\/", "</"))


def decoded(blob: dict) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(blob["q"]), np.uint8).astype(np.float64)
    s = np.frombuffer(base64.b64decode(blob["s"]), "<f4").astype(np.float64)
    return q.reshape(len(s), -1) / 255 * s[:, None]


def test_page_is_self_contained_and_its_bytes_hold_the_maps(tmp_path):
    model = small_vit()
    page = ex.explore(model, "astronaut", title="a <b>title</b> & more\nsecond line")
    parser = Refs()
    parser.feed(page.html)
    assert parser.refs == []  # nothing fetched: no src=, href=, ... anywhere in the markup
    code = "".join(s for s in parser.scripts if not s.lstrip().startswith("{"))  # the script, not the data
    assert not re.search(r"https?:|//[a-z]|fetch\(|XMLHttpRequest|import\(", code)
    assert "<title>a &lt;b&gt;title&lt;/b&gt; &amp; more</title>" in page.html  # the title escaped, its first line
    data = page_data(page.html)
    assert data["title"] == ["a <b>title</b> & more", "second line"] and data["numbering"] == ex.NUMBERING
    assert data["image"].startswith("data:image/png;base64,") and data["gray"].startswith("data:image/png;base64,")
    maps = page.maps
    for blob, value in [(data["query"], maps.query.flatten(-2)), (data["rows"], maps.rows.flatten(-2))]:
        want = value.reshape(-1, value.shape[-1]).double().numpy()
        scale = want.max(-1, keepdims=True)
        assert np.all(np.abs(decoded(blob) - want) <= scale / 510 + 1e-9)  # half a step of each row's maximum
    shares = np.frombuffer(base64.b64decode(data["rows_prefix"]), np.uint8) / 255
    assert np.abs(shares - maps.rows_prefix.flatten().numpy()).max() <= 1 / 510 + 1e-9
    assert (data["layers"], data["heads"], data["grid"], data["prefix"]) == (3, 4, [3, 5], ["cls"])


def test_explore_takes_names_paths_pil_images_and_tensors(tmp_path):
    model = small_vit()
    by_name = ex.explore(model, "chelsea").maps
    path = tmp_path / "cat.png"
    sample_image("chelsea").save(path)
    for image in (path, str(path), sample_image("chelsea")):  # files and PIL images are cut as the name is
        torch.testing.assert_close(ex.explore(model, image).maps.query, by_name.query)
    tensor = torch.rand(1, 3, 24, 40)
    maps = ex.explore(model, tensor).maps  # a tensor in [0, 1] is the image itself
    x = vitlens.images.prepare(tensor, model.data_config)
    torch.testing.assert_close(maps.query, ex.explorer_maps(captured(model, x), vitlens.token_layout(model)).query)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*not the normalised model input"):
        ex.explore(model, tensor * 4 - 2)
    with pytest.raises(ValueError, match="one float image"):
        ex.explore(model, torch.zeros(2, 3, 24, 40))
    with pytest.raises(TypeError, match="a path, a sample photo name, a PIL image or a tensor; got list"):
        ex.explore(model, [1, 2])


def test_jupyter_frame_holds_the_page_and_save_writes_it(tmp_path):
    page = vitlens.explore("demo:vit-fashion", "coffee")  # the lazily exported entry point, a source by name
    frame = page._repr_html_()
    src = re.fullmatch(r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts" [^>]*></iframe>', frame).group(1)
    assert html.unescape(src) == page.html  # escaped once, whole: the notebook shows exactly the page
    out = page.save(tmp_path / "new" / "explorer.html")
    assert out.read_text(encoding="utf-8") == page.html
    assert page_data(page.html)["title"] == ["Attention explorer: demo:vit-fashion on coffee"]


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitlens.cli", "analyze", "explore", *argv], capture_output=True,
                          text=True, timeout=300)


def test_cli_writes_one_page_and_refuses_bad_input_in_one_line(tmp_path):
    source = tmp_path / "vit.safetensors"
    vitlens.save_model(small_vit(), source)
    out = tmp_path / "explorer.html"
    done = cli("--model", str(source), "--image", "rocket", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(out)) and "MB)" in done.stdout
    assert set(tmp_path.iterdir()) == {source, out}  # no temporary file left behind
    text = out.read_text(encoding="utf-8")
    assert "src=" not in text and "href=" not in text
    data = page_data(text)
    assert data["title"][0] == f"Attention explorer: {source} on rocket" and data["head_fusion"] == "mean"
    cnn = tmp_path / "cnn.safetensors"
    vitlens.save_model(vitlens.create_cnn("resnet18", num_classes=5, img_size=32), cnn)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for argv, code, message in [
        (["--model", str(cnn)], 2, "is a ResNet, not a ViT"),
        (["--model", str(source), "--image", str(tmp_path / "missing.png")], 2, "cannot read"),
        (["--model", str(source), "--out", str(tmp_path)], 2, "is a folder; name the HTML file"),
        (["--model", str(source), "--out", str(blocker / "explorer.html")], 4, "I/O error"),
    ]:
        bad = cli(*argv, *([] if "--out" in argv else ["--out", str(tmp_path / "unused.html")]))
        assert bad.returncode == code and message in bad.stderr, (argv, bad.returncode, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "unused.html").exists()
    assert out.read_text(encoding="utf-8") == text  # the good page is untouched by the failed runs


def test_grid_figure_puts_each_layer_and_head_where_its_labels_say():
    """Over a uniform gray image each patch cell is (1 - alpha) * gray + alpha * lut[value / vmax]: read back at
    every cell's centre, layer l in row l and head h in column h, from a grid whose every value differs."""
    from PIL import Image

    from vitlens.analysis.figures import attention_grid_figure

    maps = torch.rand(3, 4, 3, 5, generator=torch.Generator().manual_seed(1))  # L x H x gh x gw
    gray = 0.5
    for shared in (True, False):
        fig = attention_grid_figure(torch.full((3, 24, 40), gray), maps, "a title<br><sup>model on image</sup>",
                                    shared=shared)
        mosaic = np.asarray(Image.open(io.BytesIO(base64.b64decode(fig.data[0].source.split(",", 1)[1]))))
        xs, ys = fig.layout.xaxis.tickvals, fig.layout.yaxis.tickvals
        assert list(fig.layout.xaxis.ticktext) == [f"head {h}" for h in range(1, 5)]
        assert list(fig.layout.yaxis.ticktext) == [f"layer {l}" for l in range(1, 4)]
        k = (xs[1] - xs[0] - 3) / 5  # pixels per patch: tile centres are 5 patches and a 3-px gap apart
        lut = ex.colour_lut().astype(float)
        for l, h, r, c in [(0, 0, 0, 0), (2, 3, 2, 4), (1, 2, 0, 4), (2, 0, 1, 2)]:
            vmax = maps.max() if shared else maps[l, h].max()
            want = (1 - ex.OVERLAY_ALPHA) * round(gray * 255) + ex.OVERLAY_ALPHA * lut[round(
                float(maps[l, h, r, c] / vmax) * 255)]
            x = int(xs[h] - (5 * k - 1) / 2 + (c + 0.5) * k)  # the tile's left edge, then the cell's centre
            y = int(ys[l] - (3 * k - 1) / 2 + (r + 0.5) * k)
            assert np.abs(mosaic[y, x, :3] - want).max() <= 1.5, (l, h, r, c)
