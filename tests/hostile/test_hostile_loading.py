"""The hostile-input corpus, loading and images: weight files that are not what their name says, pickles that would
run code, weights holding NaN or inf, incomplete Google checkpoints, corrupt vitlens metadata, an evil training state
under --resume, and PNG decompression bombs. Each case runs the real command in a subprocess and checks its exit code
and the one line it prints on stderr (no traceback); each bad file is built from a good one whose loading is checked
too, so a case cannot pass because the file was broken some other way."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shlex
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, PngImagePlugin
from safetensors.torch import load_file, save_file

import vitlens
from hostile import TINY, error_line, vitlens_cmd
from test_npz import official_vit_arrays
from vitlens.images import open_image
from vitlens.models.loading import model_metadata
from vitlens.train import load_config, load_state

def tiny_vit() -> torch.nn.Module:
    return vitlens.create_model("vit_ti16", depth=1, img_size=32, patch_size=8, embed_dim=32, num_heads=2,
                                mlp_dim=64, num_classes=3)


# ---- files that are not what their name says, and pickles that would run code ----------------------------------
class Payload:
    """Unpickling this runs ``touch MARKER``: the marker's absence shows that nothing ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _evil(path: Path, kind: str, marker: Path) -> None:
    obj = {"model": tiny_vit().state_dict(), "hook": Payload(marker)}
    if kind == "torch.save":
        torch.save(obj, path)
    elif kind == "torch.save, legacy format":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, as pickle.dump writes it: protocol 4 (binary, STACK_GLOBAL) or 0 (text)
        with open(path, "wb") as f:
            pickle.dump({"hook": Payload(marker)}, f, protocol=int(kind[-1]))


@pytest.mark.parametrize("kind, command", [
    ("torch.save", ["analyze", "rollout", "--model", "evil.pth", "--out", "out", "--no-png"]),
    ("torch.save, legacy format", ["info", "evil.pth"]),
    ("pickle protocol 4", ["eval", "evil.pth"]),
    ("pickle protocol 0", ["info", "evil.pth"]),
])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, kind, command):
    marker = tmp_path / "pwned"
    _evil(tmp_path / "evil.pth", kind, marker)
    line = error_line(vitlens_cmd(*command, cwd=tmp_path))
    assert re.fullmatch(r"vitlens: error: refused to load evil\.pth: it is a pickle that imports posix\.system, so "
                        r"loading it needs code execution, .*weights_only=True.*", line), line
    assert not marker.exists()
    # the payload is live: an unguarded load runs it
    subprocess.run([sys.executable, "-c", "import sys, torch; torch.load(sys.argv[1], weights_only=False)",
                    str(tmp_path / "evil.pth")], capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.parametrize("name, content, starts", [
    ("notes.pth", b"these are my notes, not weights\n" * 20, r"b'these ar'"),
    ("noise.pt", bytes(np.random.default_rng(3).integers(1, 0x80, 4096, dtype=np.uint8)), r"b'.{8,32}'"),
])
def test_text_or_random_bytes_are_not_a_pytorch_file(tmp_path, name, content, starts):
    (tmp_path / name).write_bytes(content)
    line = error_line(vitlens_cmd("info", name, cwd=tmp_path))
    assert re.fullmatch(rf"vitlens: error: {re.escape(name)} is not a PyTorch file \(it starts with {starts}; "
                        r"torch\.save writes a zip, which starts with b'PK\\x03\\x04'\): a text file, or another "
                        r"format under a PyTorch name\?", line), line


def test_random_bytes_after_a_pickle_header_are_corrupt_not_code(tmp_path):
    """Bytes that start like torch's legacy format (pickle protocol 2) and then are noise: broken, not dangerous."""
    noise = bytes(np.random.default_rng(5).integers(0xC0, 0x100, 4096, dtype=np.uint8))  # no pickle opcode
    (tmp_path / "w.pth").write_bytes(b"\x80\x02" + noise)
    line = error_line(vitlens_cmd("info", "w.pth", cwd=tmp_path))
    assert re.fullmatch(r"vitlens: error: w\.pth is not a readable PyTorch file: truncated or corrupt, or not "
                        r"written by torch\.save \(Unsupported operand \d+\)", line), line


# ---- weights holding NaN or inf ------------------------------------------------------------------------------
@pytest.fixture
def broken_weights(tmp_path: Path) -> Path:
    """A vitlens file whose qkv weight holds 3 NaN and 2 inf values, and whose head bias holds one NaN."""
    model = tiny_vit()
    with torch.no_grad():
        qkv = model.blocks[0].attn.qkv.weight
        qkv[0, :3] = float("nan")
        qkv[5, 7], qkv[6, 1] = float("inf"), float("-inf")
        model.head.bias[1] = float("nan")
    return vitlens.save_model(model, tmp_path / "diverged.safetensors")


@pytest.mark.parametrize("command", [
    ["info", "diverged.safetensors"],
    ["eval", "diverged.safetensors"],
    ["analyze", "rollout", "--model", "diverged.safetensors", "--out", "out", "--no-png"],
])
def test_weights_holding_nan_or_inf_are_refused_naming_the_tensor(tmp_path, broken_weights, command):
    line = error_line(vitlens_cmd(*command, cwd=tmp_path))
    qkv_size = 3 * 32 * 32
    assert line == (f"vitlens: error: diverged.safetensors: tensor 'blocks.0.attn.qkv.weight' holds 3 NaN and 2 "
                    f"infinite values (of {qkv_size}); 1 more tensor too: these weights are broken (a diverged run?). "
                    f"To load them anyway: vitlens.load_model(..., allow_nonfinite=True)")
    assert not (tmp_path / "out").exists()


def test_allow_nonfinite_loads_them_as_they_are(broken_weights):
    saved = load_file(broken_weights)
    model = vitlens.load_model(broken_weights, allow_nonfinite=True)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], equal_nan=True, rtol=0, atol=0)
    assert int(torch.isnan(model.blocks[0].attn.qkv.weight).sum()) == 3
    target = tiny_vit()
    with pytest.raises(vitlens.CheckpointError, match="'blocks.0.attn.qkv.weight' holds 3 NaN and 2 infinite"):
        vitlens.load_weights(target, saved, "diverged")
    vitlens.load_weights(target, saved, "diverged", allow_nonfinite=True)
    assert int(torch.isinf(target.blocks[0].attn.qkv.weight).sum()) == 2


@pytest.mark.parametrize("name, tensor", [("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "blocks.0.attn.qkv.weight"),
                                          ("resnet18.a1_in1k", "layer1.0.conv1.weight")])
def test_timm_hub_weights_go_through_the_same_check(monkeypatch, name, tensor):
    """timm's own pretrained loading, replaced by a model with one NaN (the hub is not reachable here)."""
    import timm

    model = timm.create_model(name.split(".")[0], num_classes=10)
    with torch.no_grad():
        model.get_parameter(tensor).view(-1)[7] = float("nan")
    monkeypatch.setattr(timm, "create_model", lambda *args, **kwargs: model)
    with pytest.raises(vitlens.CheckpointError, match=rf"timm:{re.escape(name)}: tensor '{re.escape(tensor)}' holds "
                                                      r"1 NaN and 0 infinite values"):
        vitlens.load_model(f"timm:{name}")


# ---- incomplete Google .npz checkpoints ----------------------------------------------------------------------
def _npz(path: Path, arrays: dict, drop: str | None = None) -> Path:
    np.savez(path, **{k: v for k, v in arrays.items() if k != drop})
    return path


@pytest.mark.parametrize("big_vision, drop, expected", [
    (False, "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel",
     r"no array 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel', which Google's vision_transformer layout "
     r"has \(embedding, Transformer/posembed_input/pos_embedding, Transformer/encoderblock_<i>/\{LayerNorm_0, "
     r"MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3\}, Transformer/encoder_norm\)"),
    (True, "params/pos_embedding",
     r"no array 'params/pos_embedding', which Google's big_vision layout under the prefix 'params/' has .*"),
])
def test_an_npz_missing_an_array_names_it_and_the_layout(tmp_path, big_vision, drop, expected):
    arrays = official_vit_arrays(depth=2, big_vision=big_vision)
    arrays = {f"params/{k}": v for k, v in arrays.items()} if big_vision else arrays
    assert vitlens.load_model(_npz(tmp_path / "full.npz", arrays)).config["depth"] == 2  # complete, it loads
    _npz(tmp_path / "ViT-B_16.npz", arrays, drop=drop)
    line = error_line(vitlens_cmd("analyze", "posembed", "--model", "ViT-B_16.npz", "--out", "out", "--no-png",
                                  cwd=tmp_path))
    assert re.fullmatch(r"vitlens: error: ViT-B_16\.npz is not a complete Google ViT checkpoint: " + expected,
                        line), line


def test_an_npz_with_only_the_patch_embedding(tmp_path):
    """The issue's "max() arg is an empty sequence": no encoder block at all."""
    arrays = official_vit_arrays(depth=1)
    _npz(tmp_path / "w.npz", {k: v for k, v in arrays.items() if k.startswith("embedding/")})
    line = error_line(vitlens_cmd("info", "w.npz", cwd=tmp_path))
    assert line.startswith("vitlens: error: w.npz is not a complete Google ViT checkpoint: no array "
                           "'Transformer/posembed_input/pos_embedding', which Google's vision_transformer layout has")


# ---- corrupt vitlens metadata --------------------------------------------------------------------------------
def _metadata(**change) -> str:
    meta = json.loads(json.dumps(model_metadata(tiny_vit())))  # a copy: model_metadata shares the model's dicts
    for key, value in change.items():
        section, _, field = key.partition("__")
        if field:
            meta[section][field] = value
        else:
            meta[section] = value
    return json.dumps(meta)


METADATA = {
    "not JSON": ('{"kind": "vit", "config": {', r"is not valid JSON \(Expecting .*\); re-save the model with "
                                                 r"vitlens\.save_model"),
    "a JSON list": ("[1, 2]", r"is a JSON list, not an object with 'kind', 'config' and 'data_config'; re-save.*"),
    "no config": ('{"kind": "vit"}', r"has no 'config' object; re-save the model with vitlens\.save_model"),
    "config a list": (_metadata(config=[32, 8]), r"has a 'config' that is a JSON list; re-save.*"),
    # the "not all arguments converted during string formatting": '32' % num_heads inside the model
    "a width as text": (_metadata(config__embed_dim="32"), r"has config\.embed_dim = '32', which is not an integer; .*"),
    "a bad data config": (_metadata(data_config__input_size="3x32x32"),
                          r"has data_config\.input_size = '3x32x32', which is not a list of integers; .*"),
    "an unknown kind": (_metadata(kind="mlp"), r"has kind 'mlp', not 'vit' or 'cnn'; .*"),
}


@pytest.mark.parametrize("case", METADATA)
def test_corrupt_metadata_is_named(tmp_path, case):
    text, expected = METADATA[case]
    good = vitlens.save_model(tiny_vit(), tmp_path / "good.safetensors")
    assert vitlens.load_model(good).config["embed_dim"] == 32  # the same tensors with good metadata load
    save_file(load_file(good), tmp_path / "m.safetensors", metadata={"vitlens": text})
    line = error_line(vitlens_cmd("info", "m.safetensors", cwd=tmp_path))
    assert re.fullmatch(r"vitlens: error: m\.safetensors: its vitlens metadata " + expected, line), line


def test_corrupt_metadata_in_a_pytorch_file(tmp_path):
    torch.save({"model": tiny_vit().state_dict(), "vitlens": "{'kind': 'vit'}"}, tmp_path / "m.pth")
    line = error_line(vitlens_cmd("info", "m.pth", cwd=tmp_path))
    assert re.fullmatch(r"vitlens: error: m\.pth: its vitlens metadata is not valid JSON \(.*\); .*", line), line


# ---- an evil or broken training state under --resume ---------------------------------------------------------
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A tiny run stopped at step 2 with its checkpoint, to be resumed."""
    root = tmp_path_factory.mktemp("stopped")
    (root / "tiny.yaml").write_text(yaml.safe_dump(load_config("fashion_vit", TINY).to_dict()))
    proc = vitlens_cmd("pretrain", "--config", "tiny.yaml", "--out", "run", "train.stop_at=2", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert load_state(root / "run" / "checkpoints" / "step_00000002")["step"] == 2  # its own state.pt reads
    return root / "run"


@pytest.mark.parametrize("state, expected", [
    ("evil", r"refused to load run/checkpoints/step_00000002/state\.pt: it is a pickle that imports posix\.system, "
             r"so loading it needs code execution, .*"),
    ("text", r"run/checkpoints/step_00000002/state\.pt is not a PyTorch file \(it starts with b'step: 2\\n'; .*"),
    ("no optimizer", r"run/checkpoints/step_00000002/state\.pt is not a vitlens training state \(it lacks "
                     r"optimizer, scheduler, rng\); resume from another checkpoint or start the run again"),
])
def test_resume_refuses_a_bad_state_in_one_line(tmp_path, stopped_run, state, expected):
    shutil.copytree(stopped_run, tmp_path / "run")
    path, marker = tmp_path / "run" / "checkpoints" / "step_00000002" / "state.pt", tmp_path / "pwned"
    if state == "evil":
        torch.save({**torch.load(path, weights_only=True), "hook": Payload(marker)}, path)
    elif state == "text":
        path.write_text("step: 2\noptimizer: adamw\n")
    else:
        torch.save({"step": 2}, path)
    line = error_line(vitlens_cmd("pretrain", "--resume", "run", cwd=tmp_path))
    assert re.fullmatch("vitlens: error: " + expected, line), line
    assert not marker.exists() and not (tmp_path / "run" / "model.safetensors").exists()


# ---- images: decompression bombs -----------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC-32 of type and data (PNG spec, section 5.3)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with(chunk: bytes) -> bytes:
    """A valid 16 x 16 PNG with ``chunk`` right after its header (IHDR: 8-byte signature + 25 bytes)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG")
    png = buf.getvalue()
    return png[:33] + chunk + png[33:]


BOMB = zlib.compress(b"\0" * (8 * 2**20), 9)  # 8 KB that inflate to 8 MB


@pytest.mark.parametrize("name, chunk", [
    ("comment.png", _chunk(b"zTXt", b"Comment\0\0" + BOMB)),  # keyword, NUL, compression method 0, data
    ("profile.png", _chunk(b"iCCP", b"sRGB\0\0" + BOMB)),      # profile name, NUL, compression method 0, profile
])
def test_a_bomb_in_a_png_metadata_chunk_is_named(tmp_path, name, chunk):
    assert len(zlib.decompress(BOMB)) > PngImagePlugin.MAX_TEXT_CHUNK > len(chunk)
    assert open_image(_png_with(b"")).size == (16, 16)  # the same PNG without the chunk is a good image
    (tmp_path / name).write_bytes(_png_with(chunk))
    line = error_line(vitlens_cmd("analyze", "heads", "--model", "demo:vit-fashion", "--image", name, "--out", "out",
                                  "--no-png", cwd=tmp_path))
    assert line == (f"vitlens: error: {name} is refused as a decompression bomb in a PNG metadata chunk: a compressed "
                    f"text or colour-profile chunk (zTXt, iTXt or iCCP) inflates past 1 MB; save the image again "
                    f"without its metadata")


def test_a_png_declaring_too_many_pixels_is_named_a_bomb(tmp_path):
    """20000 x 20000 declared in the header: PIL refuses it before decoding (its limit is 2 x 89.5 megapixels)."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))  # 8-bit grayscale
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IEND", b""))
    line = error_line(vitlens_cmd("analyze", "heads", "--model", "demo:vit-fashion", "--image", "huge.png", "--out",
                                  "out", "--no-png", cwd=tmp_path))
    assert re.fullmatch(r"vitlens: error: huge\.png is refused as a decompression bomb: Image size \(400000000 "
                        r"pixels\) exceeds limit of \d+ pixels, could be decompression bomb DOS attack\.", line), line


def test_a_demo_name_is_a_name_never_a_path(tmp_path):
    """demo:<name> is looked up among the bundled models: a relative path in it never reaches another file."""
    from vitlens.models.loading import WEIGHTS_DIR

    vitlens.save_model(vitlens.create_model("vit_ti16", img_size=32, patch_size=8, depth=1), tmp_path / "x.safetensors")
    escape = os.path.relpath(tmp_path / "x", WEIGHTS_DIR)  # ../../.. up to / and down to the saved file
    assert (WEIGHTS_DIR / f"{escape}.safetensors").exists()
    with pytest.raises(ValueError, match="unknown demo model"):
        vitlens.load_model(f"demo:{escape}")
