"""Every analysis page once with its defaults, as a user first sees it, and each figure's numbers against an
independent computation: attention recomputed by hand from each block's input (plain hooks, not vitlens.capture),
rollout as a numpy matrix product, distances by a math.hypot loop, similarities by F.cosine_similarity."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vitlens
from test_app import figures, ok, open_page, plotly_array
from vitlens.data import load_tensors
from vitlens.images import prepare, preprocess, sample_image

GRID = (7, 7)  # the bundled ViT: 28 x 28 px in 4 x 4 patches


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return vitlens.load_model("demo:vit-fashion").eval()


def hand_attentions(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Every block's B x heads x N x N softmax(q k^T / sqrt(d)), from the input its attention module receives."""
    inputs = []
    hooks = [b.attn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].double())) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    out = []
    for block, t in zip(model.blocks, (t.detach() for t in inputs)):
        B, N, D = t.shape
        heads = block.attn.num_heads
        w, b = block.attn.qkv.weight.detach().double(), block.attn.qkv.bias.detach().double()
        qkv = (t @ w.T + b).view(B, N, 3, heads, D // heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        out.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), dim=-1).numpy())
    return out


def numpy_rollout(attentions: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema: heads averaged, half identity, rows renormalised, multiplied from the first layer up; the
    class token's row over the patches (image 0)."""
    joint = np.eye(attentions[0].shape[-1])
    for a in attentions:
        fused = 0.5 * a[0].mean(axis=0) + 0.5 * np.eye(a.shape[-1])
        joint = (fused / fused.sum(axis=-1, keepdims=True)) @ joint
    return joint[0, 1:].reshape(GRID)


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_attention_page_defaults_match_a_hand_rollout_the_heads_and_the_centre_patch(vit):
    at = open_page("attention")
    rollout, _gradient, heads, patch = charts(at)
    attn = hand_attentions(vit, preprocess(sample_image("astronaut"), vit.data_config))
    (heat,) = [plotly_array(t["z"]) for t in rollout["data"] if t["type"] == "heatmap"]
    want = numpy_rollout(attn)
    np.testing.assert_allclose(heat, want / want.max(), atol=1e-5)
    last = attn[-1][0, :, 0, 1:].reshape(-1, *GRID)  # each head's class-token row in the last layer (the default)
    maps = [plotly_array(t["z"]) for t in heads["data"] if t["type"] == "heatmap"]
    np.testing.assert_allclose(np.stack(maps), last / last.max(axis=(1, 2), keepdims=True), atol=1e-5)
    centre = 1 + (GRID[0] // 2) * GRID[1] + GRID[1] // 2  # the default patch, after the class token
    assert "patch (row 4, column 4)" in patch["layout"]["title"]["text"]  # numbered from 1, as layers and heads
    per_layer = [plotly_array(t["z"]) for t in patch["data"] if t["type"] == "heatmap"]
    want = np.stack([a[0, :, centre, 1:].mean(axis=0).reshape(GRID) for a in attn])
    np.testing.assert_allclose(np.stack(per_layer), want, atol=1e-5)


def test_distance_page_defaults_match_a_hypot_loop_over_128_test_images(vit):
    at = open_page("distance")
    spec = charts(at)[0]
    images, _ = load_tensors("test", 128)
    attn = hand_attentions(vit, prepare(images, vit.data_config))
    centres = [((r + 0.5) * 4, (c + 0.5) * 4) for r in range(GRID[0]) for c in range(GRID[1])]
    dist = np.array([[math.hypot(a[0] - b[0], a[1] - b[1]) for b in centres] for a in centres])
    for h, trace in enumerate(t for t in spec["data"] if t.get("name", "").startswith("head ")):
        # per layer: each patch query's attention-weighted distance over the patches (renormalised without the
        # class token), averaged over queries and images
        want = []
        for a in attn:
            w = a[:, h, 1:, 1:]
            want.append(((w / w.sum(-1, keepdims=True)) * dist).sum(-1).mean())
        np.testing.assert_allclose(plotly_array(trace["y"]), want, rtol=1e-4)


def test_posembed_page_defaults_match_a_cosine_similarity_loop(vit):
    at = open_page("posembed")
    spec = charts(at)[0]
    big = plotly_array(spec["data"][0]["z"]).astype(float)
    table = vit.pos_embed[0, 1:].detach().double()  # the patch rows (the class slot left out)
    gh, gw = GRID
    for r, c in [(0, 0), (1, 5), (6, 2)]:  # rows and columns that differ
        want = torch.stack([F.cosine_similarity(table[r * gw + c], table[i], dim=0) for i in range(gh * gw)])
        tile = big[r * (gh + 1):r * (gh + 1) + gh, c * (gw + 1):c * (gw + 1) + gw]
        np.testing.assert_allclose(tile, want.view(gh, gw).numpy(), atol=1e-6)


def test_model_page_defaults_count_the_parameters(vit):
    at = ok(open_page("model"))
    params = next(m.value for m in at.metric if m.label == "Parameters")
    assert params == f"{sum(p.numel() for p in vit.parameters()) / 1e6:.2f} M"
    assert figures(at) == 0


def test_probe_page_defaults_match_scikit_learn_on_features_read_by_hooks(vit):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    at = open_page("probe")
    at.button(key="probe_run").click().run()
    ok(at)
    table = at.dataframe[0].value  # the ViT's: layer, logistic, k-shot columns
    assert list(table.columns) == ["layer", "logistic", "1-shot", "5-shot", "10-shot", "25-shot"]

    def pre_logits(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_tensors(split, n)
        feats = []
        hook = vit.norm.register_forward_hook(lambda _m, _i, out: feats.append(out[:, 0]))
        with torch.no_grad():
            vit(prepare(images, vit.data_config))
        hook.remove()
        return feats[0].numpy(), labels.numpy()

    (train_x, train_y), (test_x, test_y) = pre_logits("train", 1000), pre_logits("test", 500)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train_x, train_y)
    row = table[table["layer"] == "pre_logits"].iloc[0]
    assert row["logistic"] == pytest.approx(clf.score(test_x, test_y), abs=2 / 500)  # at most a test image apart
