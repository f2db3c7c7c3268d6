"""Properties that hold for every input, checked by hypothesis on small random cases."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import vitlens
from vitlens.analysis import attention_rollout, mean_attention_distance
from vitlens.bias import shuffle_patches

FAST = settings(max_examples=25, deadline=None)
FINITE = st.floats(-20, 20, allow_nan=False, width=32)


@st.composite
def attention_stacks(draw):
    """L layers of B x H x N x N post-softmax attention from arbitrary logits (rows of any shape, some peaked)."""
    L, B, H, N = (draw(st.integers(1, n)) for n in (4, 2, 3, 9))
    logits = draw(arrays(np.float32, (L, B, H, N, N), elements=FINITE))
    return list(torch.softmax(torch.from_numpy(logits), dim=-1))


@FAST
@given(attention_stacks(), st.sampled_from(["mean", "max", "min"]), st.floats(0, 0.9))
def test_rollout_rows_sum_to_one_for_any_attention_stack(attentions, fusion, discard_ratio):
    joint = attention_rollout(attentions, head_fusion=fusion, discard_ratio=discard_ratio)
    n = attentions[0].shape[-1]
    assert joint.shape == (attentions[0].shape[0], n, n) and bool((joint >= 0).all())
    torch.testing.assert_close(joint.sum(-1), torch.ones(joint.shape[:2]), atol=1e-5, rtol=0)


@FAST
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2), st.integers(1, 8),
       st.sampled_from(["bicubic", "bilinear", "jax"]))
def test_resizing_position_embeddings_to_their_own_grid_is_the_identity(gh, gw, prefix, dim, mode):
    table = torch.randn(1, prefix + gh * gw, dim)
    out = vitlens.resize_pos_embed(table, (gh, gw), old_grid=(gh, gw), num_prefix_tokens=prefix, mode=mode)
    assert torch.equal(out, table)


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31))
def test_shuffling_with_one_piece_is_the_identity(b, c, h, w, seed):
    images = torch.randn(b, c, h, w)
    assert torch.equal(shuffle_patches(images, 1, torch.Generator().manual_seed(seed)), images)


@FAST
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 16), st.integers(1, 16), st.integers(0, 2))
def test_uniform_attention_distance_is_the_mean_distance_between_patches(gh, gw, ph, pw, prefix):
    """Uniform attention over the patches (any mass on the prefix tokens is renormalised away): the mean over all
    ordered pairs of patch centres of their distance in pixels, by brute force."""
    n = prefix + gh * gw
    attention = torch.full((1, 1, n, n), 1.0 / n, dtype=torch.float64)
    layout = vitlens.TokenLayout(tuple(f"p{i}" for i in range(prefix)), (gh, gw), (ph, pw), "avg")
    cells = [(r, c) for r in range(gh) for c in range(gw)]
    want = sum(math.hypot((r1 - r2) * ph, (c1 - c2) * pw) for r1, c1 in cells for r2, c2 in cells) / len(cells) ** 2
    assert mean_attention_distance([attention], layout).item() == pytest.approx(want, rel=1e-12, abs=1e-12)
