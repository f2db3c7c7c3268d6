"""explain() and the batched faithfulness against independent references: closed forms on a linear model, a model whose
true relevance is known, sklearn's AUC, a per-image loop written here from the definitions (pixels switched one image
and one step at a time; tokens dropped by a forward pass written out), Grad-CAM from the block's gradient by hand."""
import numpy as np
import pytest
import timm
import torch
from conftest import perturb_
from sklearn.metrics import auc
from test_capture_families import FAMILIES, make
from torch import nn

import vitlens
from vitlens.analysis import METHODS, Explanation, explain, faithfulness, methods_for
from vitlens.analysis.faithfulness import baselines_for, blurred, dropping_tokens, ranks, token_baseline_problem

MODES, ORDERS = ("deletion", "insertion"), ("morf", "lerf")


class Linear(nn.Module):
    """logits = W x over the flattened image."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@pytest.fixture(scope="module")
def vit():
    """A small vitlens ViT on a non-square grid (3 x 5 patches: an odd count) with one input channel."""
    torch.manual_seed(0)
    return perturb_(vitlens.create_model("vit_ti16", img_size=(12, 20), patch_size=4, in_chans=1, embed_dim=32,
                                         depth=2, num_heads=2, mlp_dim=32, num_classes=5), std=0.3).eval()


def test_ig_and_input_x_gradient_equal_w_times_x_on_a_linear_model():
    torch.manual_seed(1)
    C, H, W, K = 2, 5, 7, 3  # non-square, two channels: the map is the channel sum
    model = Linear(torch.randn(K, C * H * W, dtype=torch.float64))
    x = torch.randn(4, C, H, W, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1, 2])
    want = (model.w.detach()[targets].view(4, C, H, W) * x).sum(1)
    ig = explain(model, x, "integrated_gradients", targets, baseline=0.0, steps=5)
    ixg = explain(model, x, "input_x_gradient", targets)
    for e in (ig, ixg):
        torch.testing.assert_close(e.maps, want, rtol=1e-12, atol=1e-12)
        assert e.raw is e.maps and e.resize == "none" and e.targets.tolist() == targets.tolist()


def test_the_true_relevance_deletes_fastest_and_the_random_map_sits_between():
    torch.manual_seed(2)
    H = W = 8
    w = torch.rand(H * W, dtype=torch.float64) * 4 / (H * W)
    model = Linear(torch.stack([w, torch.zeros_like(w)]))  # class 0: sigmoid(sum w x); softmax of (s, 0)
    x = torch.rand(16, 1, H, W, dtype=torch.float64)
    true = w.view(1, H, W) * x[:, 0]  # each pixel's share of the logit: removing the largest first is optimal
    runs = {name: faithfulness(model, x, m, 0, steps=16) for name, m in dict(
        true=true, random=explain(model, x, "random", 0).maps, reverse=-true,
        input_x_gradient=explain(model, x, "input_x_gradient", 0).maps).items()}
    morf = {name: r.auc["deletion"]["morf"] for name, r in runs.items()}
    assert (morf["true"] < morf["random"]).all() and (morf["random"] < morf["reverse"]).all()
    np.testing.assert_allclose(morf["input_x_gradient"], morf["true"])  # x * grad is the true share here
    assert (runs["true"].srg > 0).all() and (runs["reverse"].srg < 0).all()
    assert runs["true"].srg.mean() > runs["random"].srg.mean() > runs["reverse"].srg.mean()
    curves = runs["true"].curves["deletion"]["morf"]
    assert (np.diff(curves, axis=1) <= 1e-12).all()  # every deleted pixel only lowers the sum


def test_aucs_are_sklearns_of_the_returned_curves_and_srg_is_their_difference(vit):
    x = torch.randn(3, 1, 12, 20)
    for baseline in ("mean", "blur", "token"):
        r = faithfulness(vit, x, torch.rand(3, 3, 5), [0, 1, 4], baseline=baseline, steps=6)
        for mode in MODES:
            for order in ORDERS:
                for i in range(3):
                    assert r.auc[mode][order][i] == pytest.approx(
                        auc(r.fractions[mode], r.curves[mode][order][i]), abs=1e-12)
        np.testing.assert_allclose(r.srg, r.auc["deletion"]["lerf"] - r.auc["deletion"]["morf"])
        np.testing.assert_allclose(r.srg, r.auc["insertion"]["morf"] - r.auc["insertion"]["lerf"], atol=1e-12)


def _switched(x: torch.Tensor, base: torch.Tensor, relevance: torch.Tensor, n: int, *, most: bool,
              into_base: bool) -> torch.Tensor:
    """One image with n pixels switched, written from the definition: rank pixels by relevance (the maps here have
    no ties), take the n most (or least) relevant; deletion puts the baseline there, insertion puts the image there."""
    flat = relevance.flatten()
    ranked = sorted(range(flat.numel()), key=lambda p: (-float(flat[p]), p))
    chosen = ranked[:n] if most else ranked[len(ranked) - n:]
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[chosen] = True
    mask = mask.view(relevance.shape)
    if into_base:  # insertion: the chosen pixels of the image go into the baseline
        return torch.where(mask, x, base)
    return torch.where(mask, base, x)


@pytest.mark.parametrize("baseline", ["mean", "blur"])
def test_pixel_curves_equal_a_per_image_loop_written_from_the_definition(vit, baseline):
    torch.manual_seed(3)
    x = torch.randn(3, 1, 12, 20)
    maps = torch.rand(3, 12, 20)
    targets = torch.tensor([1, 3, 0])
    r = faithfulness(vit, x, maps, targets, baseline=baseline, steps=7, batch_size=5)
    base = torch.zeros_like(x) if baseline == "mean" else blurred(x)
    units = 12 * 20
    first = [round(k * units / 7) for k in range(4)]
    np.testing.assert_array_equal(np.round(r.fractions["deletion"][:4] * units), first)
    for mode in MODES:
        for order in ORDERS:
            counts = np.round(r.fractions[mode] * units).astype(int)
            for i in range(3):
                want = []
                for n in counts:
                    img = _switched(x[i, 0], base[i, 0], maps[i], int(n), most=order == "morf",
                                    into_base=mode == "insertion")
                    with torch.no_grad():
                        want.append(vit(img[None, None]).softmax(-1)[0, targets[i]].item())
                np.testing.assert_allclose(r.curves[mode][order][i], want, atol=1e-6, err_msg=f"{mode} {order}")


def test_ties_are_broken_at_random_the_same_for_every_image_and_lerf_is_the_reverse(vit):
    x = torch.randn(2, 1, 12, 20)
    flat = torch.zeros(2, 12, 20)  # one big tie, as IG on a black background or Grad-CAM cut by its ReLU
    r = faithfulness(vit, x, flat, 0, steps=2, return_images=True)
    deleted = r.images[:, :, 1, 0] != x[:, None, 0]  # B x (MoRF, LeRF) x H x W: what half-way deletion changed
    assert deleted[:, 0].sum((-2, -1)).tolist() == [120, 120]
    assert (deleted[:, 0] ^ deleted[:, 1]).all()  # LeRF deletes exactly the other half
    assert (deleted[0] == deleted[1]).all()  # one tie order for every image
    rows = deleted[0, 0].float().mean(1)
    assert 0.2 < rows[:6].mean() < 0.8 and 0.2 < rows[6:].mean() < 0.8  # not the top rows first (raster order)
    other = faithfulness(vit, x, flat, 0, steps=2, return_images=True, seed=1).images
    assert not torch.equal(other, r.images)
    np.testing.assert_array_equal(ranks(flat.flatten(1)[1:]), ranks(flat.flatten(1))[1:])  # alone or in a batch


def _forward_on_kept_tokens(model: nn.Module, x: torch.Tensor, kept_patches: list[int]) -> torch.Tensor:
    """The model written out with only the prefix tokens and the kept patches after the position embeddings."""
    if isinstance(model, vitlens.VisionTransformer):
        t = model.patch_embed(x)
        t = torch.cat([model.cls_token.expand(len(x), -1, -1), t], dim=1) + model.pos_embed
    else:  # timm: its own embedding (class, distillation or register tokens, positions)
        t = model._pos_embed(model.patch_embed(x))
    keep = list(range(model.num_prefix_tokens)) + [model.num_prefix_tokens + p for p in sorted(kept_patches)]
    t = t[:, keep]
    t = getattr(model, "norm_pre", nn.Identity())(t)
    for blk in model.blocks:
        t = blk(t)
    return model.forward_head(model.norm(t))


@pytest.mark.parametrize("name", ["vitlens", "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "vit_small_patch14_reg4_dinov2"])
def test_token_baseline_equals_a_forward_pass_given_only_the_kept_tokens(vit, name):
    if name == "vitlens":
        model, size = vit, (12, 20)
    else:
        overrides = dict(img_size=(42, 70)) if "dinov2" in name else dict(img_size=(32, 48))
        model, size = make(name, overrides), overrides["img_size"]
    layout = vitlens.token_layout(model, size)
    torch.manual_seed(4)
    x = torch.randn(2, model.patch_embed.proj.in_channels, *size)
    relevance = torch.randn(2, *layout.grid)  # distinct values on a non-square grid
    r = faithfulness(model, x, relevance, [1, 2], baseline="token", steps=3)
    order = relevance.flatten(1).argsort(dim=1, descending=True)
    counts = np.round(r.fractions["deletion"] * layout.num_patches).astype(int)
    for i in range(2):
        for k, n in enumerate(counts):
            for o, kept in (("morf", order[i, n:]), ("lerf", order[i, :layout.num_patches - n])):
                with torch.no_grad():
                    want = _forward_on_kept_tokens(model, x[i:i + 1], kept.tolist()).softmax(-1)[0, [1, 2][i]]
                assert r.curves["deletion"][o][i, k] == pytest.approx(want.item(), abs=1e-5), (o, k)


def test_token_baseline_is_refused_where_positions_live_inside_the_blocks_or_patches_are_pooled():
    for name, overrides, why in [("eva02_tiny_patch14_224", {}, "rotary embeddings or a relative position bias"),
                                 ("beit_base_patch16_224", dict(embed_dim=192, num_heads=3), "relative position"),
                                 ("vit_base_patch16_siglip_224", dict(embed_dim=192, num_heads=3), "pools its patch")]:
        model = make(name, overrides)
        assert baselines_for(model) == ("mean", "blur") and why in token_baseline_problem(model)
        with pytest.raises(ValueError, match=why):
            faithfulness(model, torch.randn(1, 3, 224, 224), torch.rand(1, 14, 14), 0, baseline="token", steps=2)
    cnn = vitlens.create_cnn("resnet18", in_chans=1, num_classes=3, img_size=16, small_input=True,
                             channels=(8, 8, 8, 8))
    assert "needs a ViT, got ResNet" in token_baseline_problem(cnn)
    no_positions = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, pos_embed="none").eval()
    with pytest.raises(ValueError, match="never ran pos_drop on its embedded tokens"):  # timm skips it then
        faithfulness(no_positions, torch.randn(1, 3, 224, 224), torch.rand(1, 14, 14), 0, baseline="token", steps=2)


def test_grad_cam_on_a_vit_is_the_blocks_gradient_weighted_tokens_on_the_grid():
    torch.manual_seed(5)
    model = make("deit_tiny_distilled_patch16_224", dict(img_size=(32, 64)))  # 2 prefix tokens, 2 x 4 grid
    x = torch.randn(3, 3, 32, 64)
    e = explain(model, x, "gradcam", [0, 5, 9])
    seen = []
    hook = model.blocks[-1].norm1.register_forward_hook(lambda _m, _a, out: seen.append(out))
    out = model(x)
    hook.remove()
    (grad,) = torch.autograd.grad(out[[0, 1, 2], [0, 5, 9]].sum(), seen[0])
    a, g = seen[0][:, 2:].detach(), grad[:, 2:]  # drop cls and dist
    cam = torch.relu((g.mean(dim=1, keepdim=True) * a).sum(-1)).view(3, 2, 4)
    torch.testing.assert_close(e.raw, cam)
    assert e.maps.shape == (3, 32, 64) and e.resize == "bilinear from 2 x 4"
    torch.testing.assert_close(e.maps, torch.nn.functional.interpolate(cam[:, None], size=(32, 64), mode="bilinear",
                                                                       align_corners=False)[:, 0])


def test_targets_top_label_and_indices(vit):
    x = torch.randn(4, 1, 12, 20)
    with torch.no_grad():
        top = vit(x).argmax(-1)
    assert explain(vit, x, "gradient_rollout").targets.tolist() == top.tolist()
    labels = torch.tensor([4, 3, 2, 1])
    by_label = explain(vit, x, "gradient_rollout", "label", labels=labels)
    assert by_label.targets.tolist() == [4, 3, 2, 1]
    by_index = explain(vit, x, "gradient_rollout", [4, 3, 2, 1])
    torch.testing.assert_close(by_index.maps, by_label.maps)
    assert explain(vit, x, "gradcam", 2).targets.tolist() == [2] * 4
    assert not torch.allclose(explain(vit, x, "gradient_rollout", 0).raw, explain(vit, x, "gradient_rollout", 1).raw)
    for bad, match in [(dict(target="label"), "needs labels"), (dict(target=5), r"\[5\] out of range .* 5 classes"),
                       (dict(target=[1, 2]), "2 targets for 4 images"), (dict(target="best"), "'top' or 'label'")]:
        with pytest.raises(ValueError, match=match):
            explain(vit, x, "rollout", **bad)


def test_methods_refuse_what_does_not_fit(vit):
    cnn = vitlens.create_cnn("resnet18", in_chans=1, num_classes=3, img_size=16, small_input=True,
                             channels=(8, 8, 8, 8)).eval()
    assert methods_for(vit) == METHODS and methods_for(cnn) == (
        "gradcam", "integrated_gradients", "input_x_gradient", "random")
    with pytest.raises(ValueError, match="rollout reads attention maps: it needs a ViT, got ResNet"):
        explain(cnn, torch.randn(1, 1, 16, 16), "rollout")
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        explain(vit, torch.randn(1, 1, 12, 20), "lime")
    with pytest.raises(ValueError, match=r"rollout takes the options \['head_fusion', 'discard_ratio', 'start_lay"):
        explain(vit, torch.randn(1, 1, 12, 20), "rollout", steps=3)
    e = explain(cnn, torch.randn(2, 1, 16, 16), "gradcam")
    assert e.raw.shape == (2, 2, 2) and e.maps.shape == (2, 16, 16)  # the last stage: 16 px / 8


@pytest.mark.parametrize("name,overrides,prefix,pool", FAMILIES, ids=[f[0].split(".")[0] for f in FAMILIES])
def test_every_method_on_every_family(name, overrides, prefix, pool):
    model = make(name, overrides)
    size = tuple(model.patch_embed.img_size)
    layout = vitlens.token_layout(model)
    x = torch.randn(1, 3, *size)
    for method in METHODS:
        options = dict(steps=2) if method == "integrated_gradients" else {}
        e = explain(model, x, method, 1, **options)
        assert isinstance(e, Explanation) and e.maps.shape == (1, *size) and torch.isfinite(e.maps).all(), method
        assert e.raw.shape == ((1, *layout.grid) if method in METHODS[:4] else (1, *size)), method
    r = faithfulness(model, x, e, baseline=baselines_for(model)[-1], steps=2)
    assert all(np.isfinite(r.auc[m][o]).all() for m in MODES for o in ORDERS)
