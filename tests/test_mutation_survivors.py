"""Tests written for the mutants that survived `make mutation` (analyses/benchmarks/results/mutation_survivors.md):
each checks behaviour no earlier test pinned down, against an independent oracle (timm, torch.nn.functional, loops
written out here, exact messages), on tiny inputs."""
import math
import threading

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

import vitlens
from vitlens.analysis import high_norm_tokens, position_embedding_similarity, split_threshold
from vitlens.analysis.posembed import position_table


def timm_tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, depth=1, **overrides).eval()


def cosine_loop(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """sim[r, c, r2, c2] = cos(E[r * gw + c], E[r2 * gw + c2]), one pair at a time."""
    gh, gw = grid
    out = torch.empty(gh, gw, gh, gw)
    for i in range(gh * gw):
        for j in range(gh * gw):
            out[i // gw, i % gw, j // gw, j % gw] = F.cosine_similarity(table[i], table[j], dim=0)
    return out


# --- position-embedding similarity: which slots are the grid's, and the refusals -------------------------------------

def test_table_without_prefix_slots_is_read_whole():
    """DINOv2 with registers keeps no slot for its prefix tokens (no_embed_class): every row is a patch's."""
    model = timm_tiny("vit_small_patch14_reg4_dinov2", img_size=42, embed_dim=24, num_heads=2)
    assert model.no_embed_class and model.pos_embed.shape[1] == 9
    with torch.no_grad():
        model.pos_embed.normal_()
    table, grid = position_table(model)
    assert grid == (3, 3) and torch.equal(table, model.pos_embed[0])
    torch.testing.assert_close(position_embedding_similarity(model), cosine_loop(model.pos_embed[0], grid))


def test_table_with_a_class_slot_on_a_non_square_grid():
    model = vitlens.create_model("vit_ti16", img_size=(8, 12), patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                 mlp_dim=8, num_classes=0)
    with torch.no_grad():
        model.pos_embed.normal_()
    table, grid = position_table(model)
    assert grid == (2, 3) and torch.equal(table, model.pos_embed[0, 1:])
    torch.testing.assert_close(position_embedding_similarity(model), cosine_loop(model.pos_embed[0, 1:], grid))


def test_table_that_does_not_fit_the_grid_is_named_with_its_sizes():
    model = vitlens.create_model("vit_ti16", img_size=(8, 12), patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                 mlp_dim=8, num_classes=0)
    model.pos_embed = torch.nn.Parameter(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match=r"^a position table of 5 slots does not fit 1 prefix slots and the 2 x 3 grid$"):
        position_table(model)


@pytest.mark.parametrize("name,overrides,why", [
    ("beit_base_patch16_224", dict(embed_dim=24, num_heads=2, img_size=32),
     "it encodes positions with a relative position bias in each attention layer (BEiT)"),
    ("beit_base_patch16_224", dict(embed_dim=24, num_heads=2, img_size=32, use_rel_pos_bias=False,
                                   use_shared_rel_pos_bias=True),
     "it encodes positions with a relative position bias in each attention layer (BEiT)"),
    ("vit_base_patch16_rope_reg1_gap_256", dict(embed_dim=24, num_heads=2, img_size=32),
     "it encodes positions only by rotating queries and keys (RoPE)"),
])
def test_models_without_an_absolute_table_are_refused_with_the_reason(name, overrides, why):
    model = timm_tiny(name, **overrides)
    assert getattr(model, "pos_embed", None) is None
    with pytest.raises(ValueError) as err:
        position_table(model)
    assert str(err.value) == f"{type(model).__name__} has no absolute position embeddings to compare: {why}"


# --- resize_pos_embed: 2-D tables, the same grid, a wrong old grid ---------------------------------------------------

def test_resize_takes_a_two_dimensional_table_and_returns_one():
    pe = torch.randn(1 + 6, 8)
    got = vitlens.resize_pos_embed(pe, (4, 6), old_grid=(2, 3))
    torch.testing.assert_close(got, resample_abs_pos_embed(pe[None], [4, 6], [2, 3], num_prefix_tokens=1)[0])
    assert got.shape == (1 + 24, 8)


@pytest.mark.parametrize("shape", [(1 + 6, 8), (1, 1 + 6, 8)])
def test_resize_to_the_same_grid_returns_the_table_unchanged(shape):
    pe = torch.randn(*shape)
    got = vitlens.resize_pos_embed(pe, (2, 3), old_grid=(2, 3))
    assert got.shape == pe.shape and torch.equal(got, pe)


def test_resize_names_an_old_grid_that_does_not_match_the_table():
    with pytest.raises(ValueError, match=r"^old_grid \(3, 4\) does not match the 6 grid slots of the table$"):
        vitlens.resize_pos_embed(torch.randn(1, 1 + 6, 8), (4, 4), old_grid=(3, 4))


# --- high-norm tokens from a result built by hand --------------------------------------------------------------------

def norms_result(norms: torch.Tensor, attention: torch.Tensor | None = None) -> dict:
    """A token_norms result for images x layers x (1 + 6) tokens on a 2 x 3 grid after a class token."""
    layout = vitlens.TokenLayout(("cls",), (2, 3), (1, 1), "token")
    attention = torch.full_like(norms, 1 / 7) if attention is None else attention
    return dict(norms=norms, attention=attention, layers=list(range(norms.shape[1])), layout=layout)


def two_modes(ratio: float, images: int = 40) -> torch.Tensor:
    """Patch norms near 10 with one token per image near 10 * ratio (patch 4 of 6), over 1 layer."""
    g = torch.Generator().manual_seed(0)
    norms = 10 * torch.exp(0.05 * torch.randn(images, 1, 7, generator=g))
    norms[:, 0, 1 + 4] *= ratio
    return norms


def test_high_norm_split_needs_the_documented_ratio_of_four_by_default():
    found = high_norm_tokens(norms_result(two_modes(4.5)))  # 4.5 apart: above the default 4, below 5
    assert math.isfinite(found["thresholds"][0]) and found["count"] == [1.0] and found["images_with"] == [1.0]
    assert high_norm_tokens(norms_result(two_modes(4.5)), min_ratio=6.0)["thresholds"] == [math.inf]


def test_fixed_threshold_is_strict_and_kept_in_the_norms_dtype():
    norms = torch.full((2, 1, 7), 0.05, dtype=torch.float64)
    norms[0, 0, 1 + 2] = 0.1  # exactly the threshold: not an outlier
    norms[1, 0, 1 + 5] = 0.1 + 1e-12  # just above it in float64 (below 0.1 rounded to float32)
    found = high_norm_tokens(norms_result(norms), threshold=0.1)
    want = torch.zeros(2, 1, 6, dtype=torch.bool)
    want[1, 0, 5] = True
    assert torch.equal(found["outliers"], want)
    assert found["count"] == [0.5] and found["images_with"] == [0.5]
    torch.testing.assert_close(found["positions"][0], torch.tensor([[0.0, 0, 0], [0, 0, 0.5]]))


def test_split_threshold_defaults_and_norms_below_one():
    patches = two_modes(4.5)[:, :, 1:]
    cut = split_threshold(patches)  # the default ratio, 4, is met
    assert patches[:, 0, :4].max() < cut < patches[:, 0, 4].min()
    small = two_modes(10.0)[:, :, 1:] / 1000  # norms of 0.01 and 0.1: the split is the same, scaled
    assert split_threshold(small) == pytest.approx(split_threshold(two_modes(10.0)[:, :, 1:]) / 1000, rel=1e-6)


def test_split_threshold_fits_on_evenly_strided_samples_at_most_max_samples(monkeypatch):
    from sklearn.mixture import GaussianMixture

    seen = []
    fit = GaussianMixture.fit
    monkeypatch.setattr(GaussianMixture, "fit", lambda self, X, y=None: seen.append(X.copy()) or fit(self, X))
    norms = torch.arange(1, 200_001, dtype=torch.float64)
    split_threshold(norms)  # the default max_samples, 100,000: every second norm
    assert seen[0].shape == (100_000, 1)
    torch.testing.assert_close(torch.from_numpy(seen[0][:, 0]), norms[::2].log())


def test_split_threshold_counts_modes_exactly_min_ratio_apart_and_finds_the_crossing():
    """"At least min_ratio apart": a ratio equal to it counts. The split is where sklearn's own mixture, fitted the
    same way, gives the high component a posterior of 1/2 (found here by bisection), to the 1/2000 grid step."""
    from scipy.optimize import brentq
    from sklearn.mixture import GaussianMixture

    patches = two_modes(4.5)[:, :, 1:]
    logs = patches.double().log().flatten().numpy().reshape(-1, 1)
    gmm = GaussianMixture(2, random_state=0).fit(logs)
    lo, hi = sorted(gmm.means_.ravel())
    high = int(gmm.means_.ravel().argmax())
    cut = split_threshold(patches, min_ratio=math.exp(hi - lo))
    assert math.isfinite(cut)
    crossing = brentq(lambda t: gmm.predict_proba([[t]])[0, high] - 0.5, lo, hi)
    assert 0 <= math.log(cut) - crossing <= (hi - lo) / 2000 + 1e-12


def test_patch_distances_against_math_hypot_on_a_non_square_grid():
    from vitlens.analysis.distance import patch_distances

    for patch, (ph, pw) in ((4, (4, 4)), ((4, 7), (4, 7))):
        got = patch_distances((2, 3), patch)
        cells = [(r, c) for r in range(2) for c in range(3)]
        want = torch.tensor([[math.hypot((r - r2) * ph, (c - c2) * pw) for r2, c2 in cells] for r, c in cells],
                            dtype=torch.float64)
        torch.testing.assert_close(got, want)


def test_prefix_shares_names_a_matrix_of_the_wrong_size():
    from vitlens.analysis import prefix_shares

    layout = vitlens.TokenLayout(("cls",), (2, 3), (1, 1), "token")
    with pytest.raises(ValueError, match=r"^5 tokens do not match the layout's 7$"):
        prefix_shares(torch.rand(3, 5, 5), layout)


def test_mean_attention_distance_names_attention_that_does_not_fit_the_grid():
    from vitlens.analysis import mean_attention_distance

    layout = vitlens.TokenLayout(("cls",), (2, 3), (1, 1), "token")
    attention = torch.softmax(torch.randn(1, 2, 8, 8), dim=-1)  # 8 tokens; the layout has 1 + 6
    with pytest.raises(ValueError, match=r"^attention over 8 keys does not match grid \(2, 3\)$"):
        mean_attention_distance([attention], layout, include_prefix=True)


# --- head maps' DINO masks against a loop over the sorted patches ----------------------------------------------------

def dino_mask_loop(row: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep the largest patches, one by one, until they hold ``threshold`` of the row's mass."""
    keep, held = torch.zeros_like(row), 0.0
    for i in row.argsort(descending=True).tolist():
        if held >= threshold * row.sum().item():
            break
        keep[i], held = row[i], held + row[i].item()
    return keep


@pytest.mark.parametrize("threshold", [0.3, 0.75, 1.0])
def test_head_maps_threshold_keeps_what_a_loop_over_sorted_patches_keeps(threshold):
    from vitlens.analysis import head_maps

    layout = vitlens.TokenLayout(("cls",), (2, 3), (1, 1), "token")
    g = torch.Generator().manual_seed(1)
    attention = 5 * torch.rand(2, 3, 7, 7, generator=g, dtype=torch.float64)  # rows summing to ~15, not 1
    got = head_maps([attention], layout, threshold=threshold)
    for b in range(2):
        for h in range(3):
            want = dino_mask_loop(attention[b, h, 0, 1:], threshold).reshape(2, 3)
            torch.testing.assert_close(got[b, h], want)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_head_maps_threshold_outside_zero_one_is_refused(threshold):
    from vitlens.analysis import head_maps

    layout = vitlens.TokenLayout(("cls",), (2, 3), (1, 1), "token")
    with pytest.raises(ValueError, match=rf"^threshold must be in \(0, 1\], got {threshold}$"):
        head_maps([torch.rand(1, 2, 7, 7)], layout, threshold=threshold)


def test_head_maps_threshold_met_exactly_keeps_no_more_patches():
    """Patches holding 1/2 + 1/4 of the mass meet a threshold of 0.75 exactly: the smallest set is those two."""
    from vitlens.analysis import head_maps

    layout = vitlens.TokenLayout(("cls",), (2, 3), (1, 1), "token")
    attention = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    attention[0, 0, 0, 1:] = torch.tensor([1.0, 4.0, 0.25, 2.0, 0.5, 0.25])
    got = head_maps([attention], layout, threshold=0.75)
    torch.testing.assert_close(got[0, 0], torch.tensor([[0.0, 4.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64))


def test_rollout_names_a_start_layer_past_the_last():
    from vitlens.analysis import attention_rollout

    with pytest.raises(ValueError, match=r"^no attention layers from start_layer=3 on \(3 given\)$"):
        attention_rollout([torch.eye(4).expand(1, 1, 4, 4)] * 3, start_layer=3)


# --- rollout_step, the streaming rollout's public step, with its defaults ----------------------------------------------

def test_rollout_step_defaults_are_the_papers_mean_and_no_discard():
    from vitlens.analysis import rollout_step

    attention = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), dim=-1)
    a = attention.mean(1) + torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(rollout_step(None, attention), a / a.sum(-1, keepdim=True))
    joint = torch.softmax(torch.randn(2, 5, 5, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(rollout_step(joint, attention), a / a.sum(-1, keepdim=True) @ joint)


def test_rollout_step_discard_protects_one_class_token_by_default():
    """Half of the 16 patch-patch entries (the 8 lowest) are zeroed; the class token's row and column never are."""
    from vitlens.analysis import rollout_step

    fused = torch.arange(1.0, 26.0, dtype=torch.float64).reshape(5, 5)[torch.randperm(5)][:, torch.randperm(5)]
    got = rollout_step(None, fused[None, None], discard_ratio=0.5)
    patch = fused[1:, 1:]
    want = fused.clone()
    want[1:, 1:] = patch * (patch > patch.flatten().sort().values[7])
    want = want + torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(got[0], want / want.sum(-1, keepdim=True))


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_rollout_step_refuses_a_discard_ratio_outside_zero_one(ratio):
    from vitlens.analysis import rollout_step

    with pytest.raises(ValueError, match=rf"^discard_ratio must be in \[0, 1\), got {ratio}$"):
        rollout_step(None, torch.rand(1, 1, 4, 4), discard_ratio=ratio)


def test_rollout_of_half_precision_maps_stays_in_their_dtype():
    """capture(dtype=torch.float16) halves the maps' memory; the rollout of such maps is float16 too (its identity
    included), and within float16's precision of the float64 product."""
    from vitlens.analysis import attention_rollout

    maps = [torch.softmax(torch.randn(1, 2, 5, 5), dim=-1).half() for _ in range(2)]
    got = attention_rollout(maps)
    assert got.dtype == torch.float16
    want = torch.eye(5, dtype=torch.float64)
    for a in maps:
        a = a.double().mean(1)[0] + torch.eye(5, dtype=torch.float64)
        want = a / a.sum(-1, keepdim=True) @ want
    torch.testing.assert_close(got[0].double(), want, atol=3e-3, rtol=0)


# --- capture: what is kept out of the autograd graph, and another thread's tokens ------------------------------------

def tiny_capture_vit() -> vitlens.VisionTransformer:
    torch.manual_seed(0)
    return vitlens.create_model("vit_ti16", img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_dim=16,
                                num_classes=3).eval()


def test_capture_without_grad_keeps_maps_and_tokens_out_of_the_graph():
    """With grad enabled and parameters that need it, a plain capture still keeps detached copies (grad=True is the
    way to keep them in the graph), equal to the ones grad=True keeps."""
    model = tiny_capture_vit()
    x = torch.randn(1, 3, 16, 16)
    with vitlens.capture(model, tokens=True) as rec:
        model(x)
    with vitlens.capture(model, tokens=True, grad=True) as ref:
        model(x)
    for kept, graph in ((rec.attentions, ref.attentions), (rec.tokens, ref.tokens)):
        assert not any(t.requires_grad for t in kept) and all(t.requires_grad for t in graph)
        for a, b in zip(kept, graph):
            torch.testing.assert_close(a, b.detach())


def test_tokens_of_another_threads_forward_pass_are_not_recorded():
    model = tiny_capture_vit()
    mine, theirs = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        with vitlens.capture(model, attentions=False, tokens=True) as rec:
            model(mine)
            other = threading.Thread(target=model, args=(theirs,))  # no capture open in that thread
            other.start()
            other.join()
        with vitlens.capture(model, attentions=False, tokens=True) as ref:
            model(mine)
    for a, b in zip(rec.tokens, ref.tokens):
        torch.testing.assert_close(a, b)


def test_fuse_heads_defaults_to_the_mean_and_names_an_unknown_fusion():
    from vitlens.analysis import fuse_heads

    attention = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(fuse_heads(attention), attention.sum(1) / 3)
    with pytest.raises(ValueError, match=r"^head_fusion must be 'mean', 'max' or 'min', got 'median'$"):
        fuse_heads(attention, "median")


def test_a_capture_open_in_another_thread_passes_attention_masks_through():
    """timm's blocks call their attention with keyword arguments (attn_mask); while another thread's capture has the
    module wrapped, this thread's call must still reach timm's forward with them."""
    model = timm_tiny("vit_tiny_patch16_224", img_size=32, embed_dim=24, num_heads=2)
    x = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 1:] = float("-inf")  # every token sees only the class token
    opened, done = threading.Event(), threading.Event()

    def hold():
        with vitlens.capture(model):
            opened.set()
            done.wait(60)

    other = threading.Thread(target=hold)
    other.start()
    opened.wait(60)
    try:
        with torch.no_grad():
            got = model.forward_features(x, attn_mask=mask)
    finally:
        done.set()
        other.join()
    with torch.no_grad():
        want = model.forward_features(x, attn_mask=mask)
        assert not torch.allclose(want, model.forward_features(x))  # the mask matters
    torch.testing.assert_close(got, want)


def test_split_threshold_on_few_norms_and_on_modes_closer_than_e():
    assert split_threshold(torch.tensor([1.0, 100.0, 10_000.0])) == math.inf  # under 4 norms: nothing to fit
    four = torch.tensor([1.0, 1.1, 1000.0, 1100.0])  # 4 norms are enough
    assert 1.1 < split_threshold(four) < 1000.0
    g = torch.Generator().manual_seed(0)
    close = torch.cat([10 * torch.exp(0.02 * torch.randn(50, generator=g)),
                       25 * torch.exp(0.02 * torch.randn(10, generator=g))])  # 2.5x apart: logs under 1 apart
    assert close[:50].max() < split_threshold(close, min_ratio=2.0) < close[50:].min()
