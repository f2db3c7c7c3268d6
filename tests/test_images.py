"""vitlens.images: zips of images, the display view, and the two routes into a model agreeing on a photo."""
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from vitlens.images import (LUMA, display_view, load_image, photo, prepare, preprocess, read_zip, sample_image,
                            to_channels, unnormalize)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_read_zip_keeps_images_and_names_what_it_skips():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)  # asymmetric: rows and columns differ
    gray = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/wide.png", png(wide))
        zf.writestr("a/", "")  # a directory entry
        zf.writestr("notes.txt", b"not an image")
        zf.writestr("gray.png", png(gray))
    images, skipped = read_zip(buf.getvalue(), 16)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    want = np.asarray(Image.fromarray(wide).resize((16, 16)), dtype=np.float32) / 255  # PIL's own resize
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), want)
    torch.testing.assert_close(images[1, 0], images[1, 2])  # grayscale as three equal channels
    assert len(skipped) == 1 and "notes.txt" in skipped[0]
    with pytest.raises(zipfile.BadZipFile):
        read_zip(b"not a zip", 16)


def test_display_view_is_the_models_input_magnified_by_whole_pixels():
    image = torch.rand(3, 20, 40)  # already at the model's 20 x 40: rows and columns differ
    config = dict(input_size=(1, 20, 40), mean=(0.5,), std=(0.5,))
    view = display_view(image, config, side=90)  # 90 // 40 = 2: each model pixel a 2 x 2 block
    assert view.shape == (1, 40, 80)
    luma = (image * torch.tensor(LUMA).view(3, 1, 1)).sum(0)
    torch.testing.assert_close(view[0, ::2, ::2], luma)
    torch.testing.assert_close(view[0, 1::2, 1::2], luma)
    assert display_view(image, dict(config, input_size=(3, 20, 40)), side=10).shape == (3, 20, 40)  # never below
    x = prepare(image, dict(config, input_size=(3, 20, 40)))
    torch.testing.assert_close(unnormalize(x[0], dict(config, mean=(0.5,) * 3, std=(0.5,) * 3)), image)


def test_to_channels_and_prepare_against_hand_formulas():
    x = torch.rand(2, 3, 8, 6)
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # ITU-R BT.601, as PIL's convert("L")
    torch.testing.assert_close(to_channels(x, 1)[:, 0], gray)
    torch.testing.assert_close(to_channels(x[:, :1], 3), x[:, :1].expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="cannot convert 2-channel"):
        to_channels(torch.rand(1, 2, 4, 4), 3)
    out = prepare(x, dict(input_size=(3, 8, 6), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0)))
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.2) / 0.25)


def test_the_command_lines_photo_route_equals_the_apps(tmp_path):
    """photo() + prepare() (the CLI) and preprocess() (the app) give the model the same input for a photo."""
    img = sample_image("chelsea")
    path = tmp_path / "cat.png"
    img.save(path)
    for config in (dict(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), interpolation="bicubic", crop_pct=1.0),
                   dict(input_size=(3, 32, 48), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear",
                        crop_pct=0.875)):
        cli = prepare(photo(path, config), config)
        app = preprocess(img, config)
        assert cli.shape == app.shape
        assert (cli - app).abs().max() < 2 / 255 / min(config["std"])  # 8-bit rounding of the app's PIL route
    torch.testing.assert_close(load_image(path), torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
