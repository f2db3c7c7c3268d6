"""The hostile-input corpus, app: what a visitor of a served app can type, pick or upload, and how the operator starts
it. Each case drives the app as users do: Streamlit's AppTest, or the real `vitlens app` (in chromium where the
rendering itself is the question)."""
from __future__ import annotations

import html
import io
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import skimage.data
from markdown_it import MarkdownIt
from PIL import Image
from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

import vitlens
from vitlens.models.loading import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
sys.path.insert(0, str(ROOT / "app"))
from harness import CHROMIUM, UPLOAD_INPUT, app_process  # noqa: E402

# Markdown and HTML a visitor might type or put in a file name: an image that would be fetched, a tag, emphasis,
# a bare URL (GFM makes it a link), LaTeX, a Streamlit colour directive and an emoji shortcode
HOSTILE = "![x](http://example.com/a.png) <b>bold</b> **strong** www.example.com $x^2$ :red[red] :smile:"
REFUSED = "model sources here are the bundled models"


# ---- how the app is served --------------------------------------------------------------------------------
def listening(port: int) -> set[str]:
    """The addresses with a socket listening on ``port``, as the kernel lists them (/proc/net/tcp and tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # each 32-bit word in the host's (little-endian) order
                found.add(socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))
    return found


def server_environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_served_on_this_machine_only_and_local_paths_only_with_the_flag():
    # a variable left in the operator's environment must not open the server's files: only the flag does
    env = dict(os.environ, VITLENS_APP_ALLOW_LOCAL_PATHS="1")
    with app_process(env=env) as (proc, url):
        assert listening(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}
        assert "VITLENS_APP_ALLOW_LOCAL_PATHS" not in server_environment(proc.pid)
    with app_process("--host", "0.0.0.0", "--allow-local-paths") as (proc, url):
        assert listening(int(url.rsplit(":", 1)[1])) == {"0.0.0.0"}
        assert server_environment(proc.pid)["VITLENS_APP_ALLOW_LOCAL_PATHS"] == "1"


def test_an_upload_cap_below_one_megabyte_is_refused():
    out = subprocess.run([sys.executable, "-m", "vitlens.cli", "app", "--max-upload-mb", "0"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["vitlens: error: --max-upload-mb 0: the upload cap must be at least 1 "
                                               "(MB)"]


# ---- which model sources a visitor may load ----------------------------------------------------------------
def save_cnn(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    vitlens.save_model(vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                                          channels=(8, 16, 32, 64)), path)
    return path


@pytest.fixture
def server(tmp_path, monkeypatch) -> dict[str, Path]:
    """A runs folder with a run, a link to it, a text file named .pt, and links out of the folder (to a valid
    checkpoint, a run and a text file); a valid checkpoint outside; the app started with that runs folder."""
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    save_cnn(runs / "cnn" / "model.safetensors")
    outside_ckpt = save_cnn(outside / "cnn.safetensors")
    save_cnn(outside / "run" / "model.safetensors")
    (outside / "notes.pt").write_text("not a checkpoint")
    (runs / "notes.pt").write_text("not a checkpoint either")
    (runs / "latest").symlink_to("cnn")  # a link that stays inside
    (runs / "link.safetensors").symlink_to(outside_ckpt)
    (runs / "linked-run").symlink_to(outside / "run")
    (runs / "evil.pt").symlink_to(outside / "notes.pt")
    (runs / "escape" / "checkpoints" / "step_1").mkdir(parents=True)  # a run inside whose weights lie outside
    (runs / "escape" / "checkpoints" / "step_1" / "model.safetensors").symlink_to(outside_ckpt)
    monkeypatch.setenv("VITLENS_APP_RUNS_DIR", str(runs))
    monkeypatch.delenv("VITLENS_APP_ALLOW_LOCAL_PATHS", raising=False)
    return dict(runs=runs, outside=outside, checkpoint=outside_ckpt)


def bias_page() -> AppTest:
    """The Inductive biases page: its CNN box loads what is typed at once (cnn_picker, as on ViT vs CNN)."""
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("views/bias.py")
    at.run()
    assert not at.exception and not at.error
    return at


def typed(at: AppTest, source: str, key: str = "bias_cnn") -> list[str]:
    at.text_input(key=key).set_value(source).run()
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


def test_typed_sources_outside_the_runs_folder_get_one_message_whether_or_not_the_file_exists(server):
    ckpt, runs = server["checkpoint"], server["runs"]
    sources = ["/etc/shadow", "/no/such/file.pt", str(ckpt),  # unreadable, missing, a valid checkpoint
               str(runs / "link.safetensors"), str(runs / "linked-run"), str(runs / "escape"),  # links out
               str(runs / "no-such-run"), f"{runs}/../outside/cnn.safetensors", "~/cnn.safetensors",
               "demo:" + os.path.relpath(ckpt.with_suffix(""), WEIGHTS_DIR),  # out of the bundled weights' folder
               "demo:no-such-model", "timm:local-dir:" + str(ckpt.parent), "timm:hf-hub:timm/resnet18.a1_in1k", ""]
    at = bias_page()
    messages = {}
    for source in sources:
        errors = typed(at, source)
        assert len(errors) == 1 and REFUSED in errors[0] and "--allow-local-paths" in errors[0], (source, errors)
        named, messages[source] = errors[0].split(REFUSED)
        assert source in named
    assert len(set(messages.values())) == 1, messages  # nothing says whether a file exists, or what it is

    assert typed(at, str(runs / "cnn")) == []  # a run the picker lists loads
    assert typed(at, "demo:cnn-fashion") == []


def test_the_operator_flag_lets_visitors_load_local_paths(server, monkeypatch):
    monkeypatch.setenv("VITLENS_APP_ALLOW_LOCAL_PATHS", "1")  # what `vitlens app --allow-local-paths` sets
    at = bias_page()
    assert typed(at, str(server["checkpoint"])) == []
    (error,) = typed(at, "/no/such/file.pt")
    assert "does not exist" in error and REFUSED not in error


def test_the_operators_own_model_loads_from_anywhere(server, monkeypatch):
    monkeypatch.setenv("VITLENS_APP_MODEL", str(server["checkpoint"]))  # `vitlens app --model PATH`
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception and not at.error and at.metric[0].value == "CNN"


def test_runs_picker_offers_only_what_lies_inside_and_survives_a_non_checkpoint(server):
    runs = server["runs"]
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.sidebar.radio(key="source_kind").set_value("Runs folder").run()
    assert not at.exception
    picker = at.sidebar.selectbox(key="run_source")
    assert picker.options == [str(runs / "cnn"), str(runs / "latest"), str(runs / "notes.pt")]
    picker.set_value(str(runs / "notes.pt")).run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"Cannot load `{runs / 'notes.pt'}`: ")


# ---- user text is shown as text -----------------------------------------------------------------------------
def squash(text: str) -> str:
    """``text`` without whitespace: a wrapped figure title puts line breaks where its spaces were."""
    return re.sub(r"\s+", "", text)


def shown_literally(markdown: str, text: str) -> bool:
    """Whether ``markdown``, parsed by an independent CommonMark parser, holds ``text`` whole inside one code span
    (where no Markdown applies, Streamlit's extensions included) and renders no HTML, image, link or emphasis."""
    tokens = [t for block in MarkdownIt("commonmark").parse(markdown) for t in (block.children or [])]
    rendered = {"html_inline", "image", "link_open", "strong_open", "em_open"} & {t.type for t in tokens}
    return not rendered and any(t.type == "code_inline" and text in t.content for t in tokens)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PHOTO = png(Image.fromarray(skimage.data.chelsea()).resize((64, 48)))


def test_typed_text_and_file_names_are_never_rendered(server):
    at = bias_page()
    (error,) = typed(at, HOSTILE)
    assert shown_literally(error, HOSTILE), error
    at.sidebar.radio(key="source_kind").set_value("timm (online)").run()
    (error,) = typed(at, HOSTILE, "timm_name")
    assert shown_literally(error, f"timm:{HOSTILE}"), error

    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("views/attention.py").run()
    at.radio(key="attn_kind").set_value("Upload").run()
    at.file_uploader(key="attn_upload").set_value((f"{HOSTILE}.png", b"not an image", "image/png")).run()
    (error,) = [e.value for e in at.error]
    assert shown_literally(error, f"{HOSTILE}.png"), error
    at.file_uploader(key="attn_upload").set_value((f"{HOSTILE}.png", PHOTO, "image/png")).run()
    assert not at.exception and not at.error
    (warning,) = [w.value for w in at.warning]  # the model knows only Fashion-MNIST: it names the file
    assert shown_literally(warning, f"{HOSTILE}.png"), warning
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    # titles wrap at spaces into <br>-separated lines: the name must be there whole once the breaks are taken out
    assert titles and all("<b>bold" not in t and squash(f"{HOSTILE}.png") in squash(html.unescape(
        t.replace("<br>", " "))) for t in titles), titles


def test_zip_and_member_names_are_never_rendered():
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("views/distance.py").run()
    at.radio(key="dist_data").set_value("Zip of my images").run()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat.png", PHOTO)
        zf.writestr(f"{HOSTILE}.png", b"not an image")
    at.file_uploader(key="dist_zip").set_value((f"{HOSTILE}.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception and not at.error
    (warning,) = [w.value for w in at.warning]
    assert shown_literally(warning, f"{HOSTILE}.png"), warning
    at.file_uploader(key="dist_zip").set_value((f"{HOSTILE}.zip", b"not a zip", "application/zip")).run()
    (error,) = [e.value for e in at.error]
    assert shown_literally(error, f"{HOSTILE}.zip"), error


def test_an_unreadable_upload_is_named_by_its_file_name():
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("views/attention.py").run()
    at.radio(key="attn_kind").set_value("Upload").run()
    at.file_uploader(key="attn_upload").set_value(("notes.png", b"this is text" * 10, "image/png")).run()
    (error,) = [e.value for e in at.error]
    assert "notes.png" in error and "BytesIO" not in error and " at 0x" not in error, error


def test_user_text_in_the_browser_is_text():
    """Streamlit's own renderer (react-markdown with GFM, math, directives and emoji): what it draws holds the
    visitor's text character for character and no element the text would make."""
    made_by_markdown = "img, a, strong, b, em, .katex, .stMarkdownColoredText"
    name = HOSTILE.replace("http://example.com/a.png", "data:,x") + ".png"  # a file name has no slashes
    with app_process() as (_, url), sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{url}/bias", timeout=180_000)
        box = page.get_by_label("CNN to compare", exact=True)
        box.fill(HOSTILE)
        box.press("Enter")
        alert = page.locator("[data-testid='stAlertContentError']", has_text="Cannot load")
        alert.wait_for(timeout=120_000)
        assert HOSTILE in alert.inner_text() and alert.locator(made_by_markdown).count() == 0
        assert REFUSED in alert.inner_text()

        page.goto(f"{url}/attention", timeout=180_000)
        page.get_by_text("Upload", exact=True).first.click(timeout=180_000)
        page.locator(UPLOAD_INPUT).set_input_files(dict(name=name, mimeType="image/png", buffer=PHOTO))
        title = page.locator(".js-plotly-plot", has_text="Attention rollout:").filter(has_text="<b>bold</b>")
        title.wait_for(timeout=120_000)  # the markup shown as text (it has no space, so no line break splits it)
        warning = page.locator("[data-testid='stAlertContentWarning']", has_text="outside its domain")
        assert name in warning.inner_text() and warning.locator(made_by_markdown).count() == 0
        # the title's lines are separate text elements, joined without their breaks
        assert squash(name) in squash(title.locator(".gtitle").text_content())
        assert title.locator(".gtitle a, .gtitle b").count() == 0
        browser.close()
