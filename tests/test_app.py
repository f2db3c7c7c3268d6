"""Every page of the Streamlit app through streamlit.testing: the default model, an uploaded photo, each control
changed once, and no exception; bad uploads get an st.error and the page goes on."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from streamlit.testing.v1 import AppTest

import vitlens
from vitlens.data.fashion_mnist import CLASSES as FASHION_CLASSES

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")


def png(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


PHOTO = ("chelsea.jpg", png(Image.fromarray(skimage.data.chelsea()), "JPEG"), "image/jpeg")


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page(f"views/{page}.py")
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    """The run raised nothing and showed no error."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def upload(at: AppTest, key: str, file: tuple[str, bytes, str]) -> AppTest:
    at.radio(key=f"{key}_kind").set_value("Upload").run()
    at.file_uploader(key=f"{key}_upload").set_value(file)
    return at.run()


def widget(at: AppTest, kind: str, label: str):
    """The one widget of this kind with this label (keys that depend on the image or model are not fixed)."""
    (found,) = [w for w in getattr(at, kind) if w.label == label]
    return found


def plotly_array(value) -> np.ndarray:
    """A trace's array as the chart's JSON holds it: a list, or Plotly's typed array (base64 bytes, dtype, shape)."""
    if not isinstance(value, dict):
        return np.asarray(value)
    flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")])


def figures(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_model_page_describes_the_default_model(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_APP_RUNS_DIR", str(tmp_path))  # an empty runs folder
    at = open_page("model")
    assert at.sidebar.selectbox(key="bundled").value == "demo:vit-fashion"
    assert [m.label for m in at.metric] == ["Kind", "Parameters", "Input", "Classes", "Test accuracy"]
    assert at.metric[0].value == "ViT" and at.metric[2].value == "1 x 28 x 28"
    at.sidebar.radio(key="source_kind").set_value("Runs folder")
    ok(at.run())
    assert any("No runs or checkpoints" in i.value for i in at.sidebar.info)


def cnn_run(tmp_path, monkeypatch) -> Path:
    """A runs folder holding one small CNN run, which the app is started with."""
    run = tmp_path / "runs" / "my-cnn"
    run.mkdir(parents=True)
    vitlens.save_model(vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                                          channels=(8, 16, 32, 64)), run / "model.safetensors")
    monkeypatch.setenv("VITLENS_APP_RUNS_DIR", str(tmp_path / "runs"))
    return run


def test_model_picker_runs_folder_and_timm_name(tmp_path, monkeypatch):
    run = cnn_run(tmp_path, monkeypatch)
    at = open_page("model")
    at.sidebar.radio(key="source_kind").set_value("Runs folder")
    ok(at.run())
    assert at.sidebar.selectbox(key="run_source").value == str(run)
    assert at.metric[0].value == "CNN"
    at.switch_page("views/attention.py")
    at.run()
    assert not at.exception and "is a CNN" in at.warning[0].value  # ViT pages say so and stop
    at.switch_page("views/model.py")
    at.sidebar.radio(key="source_kind").set_value("timm (online)").run()
    at.sidebar.text_input(key="timm_name").set_value("vit_no_such_model_p99")
    at.run()
    assert not at.exception and "timm has no model 'vit_no_such_model_p99'" in at.error[0].value

    # a known name: the download reports bytes to the page's progress bar; then timm itself is offline here
    import huggingface_hub

    updates = []

    def fake_download(repo_id, filename, revision=None, tqdm_class=None):
        with tqdm_class(total=2**21, unit="B") as bar:
            for _ in range(2):
                bar.update(2**20)
                updates.append(bar.n)
        (tmp_path / filename).write_bytes(b"weights")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    at.sidebar.text_input(key="timm_name").set_value("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    at.run()
    assert not at.exception and updates == [2**20, 2**21]
    assert "could not download the timm weights" in at.error[0].value


def test_attention_page_every_control():
    at = open_page("attention")
    assert figures(at) == 4  # rollout, gradient rollout, heads, patch per layer
    at = ok(upload(at, "attn", PHOTO))
    assert any("outside its domain" in w.value for w in at.warning)  # a photo through a Fashion-MNIST model
    assert at.dataframe[0].value["probability"].between(0, 1).all() and len(at.dataframe[0].value) == 5
    other = (int(at.dataframe[0].value["index"][0]) + 1) % 10  # explain a class that is not the top one
    for kind, label, value in [("selectbox", "Head fusion", "max"), ("slider", "Discard ratio", 0.5),
                               ("slider", "Start layer", 2), ("selectbox", "Explain class", other),
                               ("slider", "Layer", 1)]:
        ok(widget(at, kind, label).set_value(value).run())
        assert figures(at) == 4
    assert any(f"class {FASHION_CLASSES[other]}" in c.proto.spec for c in at.get("plotly_chart"))
    at.radio(key="attn_kind").set_value("Fashion-MNIST test image").run()
    ok(at.number_input(key="attn_fashion").set_value(7).run())
    assert not any("outside its domain" in w.value for w in at.warning)
    # a click on a patch of the heatmap arrives as a selection event; the per-layer figure follows it
    at.session_state["patch"] = 0
    ok(at.run())
    assert any(s.value.startswith("What patch (row 1, column 1) attends to") for s in at.subheader)


BAD = {
    "empty.png": (b"", "is empty"),
    "notes.png": (b"this is a text file, not an image" * 10, "not an image"),
    "truncated.png": (png(Image.fromarray(skimage.data.astronaut()))[:5000], "truncated or corrupt"),
    "bomb.png": (png(Image.new("1", (9000, 5000))), "megapixels"),
    "huge.png": (b"\x89PNG" + bytes(3 * 2**20), "the limit is 2 MB"),
}


def test_bad_uploads_show_an_error_and_the_app_goes_on(monkeypatch):
    monkeypatch.setenv("VITLENS_APP_MAX_UPLOAD_MB", "2")
    at = open_page("attention")
    for name, (data, message) in BAD.items():
        at = upload(at, "attn", (name, data, "image/png"))
        assert not at.exception
        assert [e.value for e in at.error] and message in at.error[0].value, (name, [e.value for e in at.error])
        at = ok(upload(at, "attn", PHOTO))  # a good file again: its result
        assert figures(at) == 4


def rgb_close(a: Image.Image, b: np.ndarray) -> bool:
    return np.abs(np.asarray(a, dtype=int) - b).max() <= 2


def test_image_modes_exif_and_formats_are_converted_correctly():
    from vitlens.images import open_image

    cases = []
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    cases.append((png(Image.fromarray(gray)), np.repeat(gray[..., None], 3, 2)))
    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)
    cases.append((png(Image.fromarray(sixteen.astype(np.int32)).convert("I;16")),
                  np.repeat(np.round(sixteen / 65535 * 255)[..., None], 3, 2)))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4] = (255, 0, 0, 255)  # opaque red over transparent: the transparent half becomes white
    cases.append((png(Image.fromarray(rgba, "RGBA")), np.where(np.arange(8)[:, None, None] < 4, [255, 0, 0], 255)))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    cases.append((png(pal, "GIF"), np.broadcast_to([10, 200, 30], (8, 8, 3))))
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan ink: RGB (0, 255, 255)
    cases.append((png(cmyk, "TIFF"), np.broadcast_to([0, 255, 255], (8, 8, 3))))
    for fmt in ("WEBP", "BMP"):
        cases.append((png(Image.new("RGB", (8, 8), (40, 80, 120)), fmt, **({"lossless": True} if fmt == "WEBP" else {})),
                      np.broadcast_to([40, 80, 120], (8, 8, 3))))
    for data, expected in cases:
        img = open_image(data)
        assert img.mode == "RGB" and rgb_close(img, expected)
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 2 x 4 image becomes 4 x 2
    wide = np.zeros((2, 4, 3), np.uint8)
    wide[:, 0] = 255  # left column white
    exif = Image.Exif()
    exif[0x0112] = 6
    img = open_image(png(Image.fromarray(wide), "PNG", exif=exif))
    assert img.size == (2, 4) and rgb_close(img, np.rot90(wide, -1))


def test_position_embedding_page_every_control():
    at = open_page("posembed")
    assert figures(at) == 3
    ok(at.select_slider(key="res_factor").set_value(1.5).run())
    ok(at.selectbox(key="res_mode").set_value("bilinear").run())
    assert figures(at) == 3


def test_distance_page_every_control():
    at = open_page("distance")
    assert figures(at) == 2  # ViT distance and the CNN's ERF
    ok(at.select_slider(key="dist_n").set_value(32).run())
    at.radio(key="dist_data").set_value("Zip of my images").run()
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat.png", png(Image.fromarray(skimage.data.chelsea()).resize((64, 48))))
        zf.writestr("broken.png", b"not an image")
    at.file_uploader(key="dist_zip").set_value(("photos.zip", buf.getvalue(), "application/zip"))
    at.run()
    assert not at.exception and not at.error
    assert any("Skipped 1" in w.value for w in at.warning) and figures(at) == 2
    at.file_uploader(key="dist_zip").set_value(("bad.zip", b"not a zip", "application/zip"))
    at.run()
    assert not at.exception and "not a readable zip" in at.error[0].value


def test_compare_page_every_control():
    at = open_page("compare")
    assert figures(at) == 2  # maps, deletion/insertion curves
    at = ok(upload(at, "cmp", PHOTO))
    aucs = at.dataframe[-1].value
    assert list(aucs["map"]) == ["ViT rollout", "ViT gradient rollout", "ViT IG", "CNN Grad-CAM", "CNN IG"]
    assert aucs[["deletion AUC", "insertion AUC"]].apply(lambda c: c.between(0, 1)).all().all()
    ok(at.select_slider(key="cmp_steps").set_value(8).run())
    at.text_input(key="cnn_source").set_value("demo:no-such-model").run()
    assert not at.exception and "Cannot load `demo:no-such-model`: model sources here are" in at.error[0].value


def test_probe_page_every_control():
    at = open_page("probe")
    at.select_slider(key="probe_train").set_value(250)
    at.select_slider(key="probe_test").set_value(100)
    at.multiselect(key="probe_shots").set_value([1, 5])
    ok(at.button(key="probe_run").click().run())
    assert figures(at) == 2
    table = at.dataframe[0].value
    assert {"layer", "logistic", "1-shot", "5-shot"} <= set(table.columns)
    assert table["logistic"].between(0, 1).all()


def test_bias_page_every_control():
    at = open_page("bias")
    assert figures(at) == 1  # the committed data-size sweep, before any probe runs
    at.select_slider(key="bias_n").set_value(64)
    ok(at.button(key="bias_run").click().run())
    assert figures(at) == 5  # translation, occlusion, ERF radii, ERF maps, sweep
    ok(at.multiselect(key="bias_probes").set_value(["occlusion"]).run())
    assert figures(at) == 2
    at.text_input(key="bias_cnn").set_value("demo:vit-fashion").run()
    assert not at.exception and "is a ViT" in at.error[0].value


def test_probe_page_with_few_training_images_and_the_default_shots_shows_no_traceback():
    """The first 250 training images hold 20 ankle boots: the default 25-shot evaluation cannot draw 25. The page
    runs the shots it can, says which it left out and why, and keeps working after a later slider move."""
    at = open_page("probe")
    at.select_slider(key="probe_train").set_value(250)
    at.select_slider(key="probe_test").set_value(100)
    ok(at.button(key="probe_run").click().run())
    assert figures(at) == 2
    assert any("25-shot" in i.value and "only 20 of class 9 (Ankle boot)" in i.value for i in at.info), at.info
    assert "25-shot" not in at.dataframe[0].value.columns and "10-shot" in at.dataframe[0].value.columns
    ok(at.select_slider(key="probe_test").set_value(500).run())


def test_norms_page_with_its_defaults_draws_each_layers_patch_norms_and_a_fixed_threshold_marks_them():
    import torch

    from vitlens.images import preprocess, sample_image

    at = open_page("norms")
    assert figures(at) == 3  # maps, norms against depth, distribution (no positions: the bundled ViT has no outliers)
    assert any(m.value.startswith("**The finding.**") and "no high-norm tokens" in m.value for m in at.markdown)
    # the maps' numbers against block outputs read with plain forward hooks on the same preprocessed photo
    model = vitlens.load_model("demo:vit-fashion")
    outputs = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out[0, 1:].norm(dim=-1))) for b in model.blocks]
    with torch.no_grad():
        model(preprocess(sample_image("astronaut"), model.data_config))
    for h in hooks:
        h.remove()
    maps = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    heat = [plotly_array(t["z"]) for t in maps if t["type"] == "heatmap"]
    assert len(heat) == len(model.blocks)
    for z, want in zip(heat, outputs):
        np.testing.assert_allclose(10 ** z, want.view(z.shape).numpy(), rtol=1e-4)
    cut = round(float(torch.stack(outputs).median()), 1)  # the input keeps two decimals
    at.number_input(key="norms_threshold").set_value(cut).run()
    ok(at)
    maps = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    marked = sum(len(plotly_array(t["x"])) for t in maps if t.get("name") == "high-norm token")
    assert marked == int((torch.stack(outputs) > cut).sum()) > 0
    assert figures(at) == 4  # now the positions too
