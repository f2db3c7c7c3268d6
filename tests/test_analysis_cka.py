"""CKA against its invariances, the feature-space formula and the U-statistic definition of HSIC."""
import itertools
import math

import pytest
import timm
import torch
from conftest import perturb_

import vitlens
from vitlens.analysis import layer_features, layer_outputs, layer_similarity, linear_cka, minibatch_cka, unbiased_hsic
from vitlens.analysis.features import _hooked


def feature_space_cka(x, y):
    """Kornblith et al. eq. for linear CKA: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred features."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return (y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())


def test_invariant_to_isotropic_scaling_and_rotation():
    x = torch.randn(200, 30)
    q, _ = torch.linalg.qr(torch.randn(30, 30))
    assert linear_cka(x, 3.7 * x @ q).item() == pytest.approx(1.0, abs=1e-10)
    y = torch.tanh(x @ torch.randn(30, 20))
    assert linear_cka(x, y).item() == pytest.approx(feature_space_cka(x, y).item(), rel=1e-10)


def test_independent_features_near_zero():
    assert linear_cka(torch.randn(2000, 10), torch.randn(2000, 10)).item() < 0.03


def test_unbiased_hsic_equals_u_statistic():
    n = 6
    x, y = torch.randn(n, 3).double(), torch.randn(n, 2).double()
    k, l = x @ x.T, y @ y.T
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):  # Song et al. 2012, h(i, j, q, r) over distinct tuples
        total += sum(k[a, b] * l[a, b] + k[a, b] * l[c, d] - 2 * k[a, b] * l[a, c]
                     for a, b, c, d in itertools.permutations((i, j, q, r))) / 24
    want = total / math.perm(n, 4)
    assert unbiased_hsic(k[None], l[None]).item() == pytest.approx(want.item(), rel=1e-9)


def test_minibatch_cka_converges_to_full():
    x = torch.randn(8192, 16)
    y = torch.tanh(x @ torch.randn(16, 16)) + 0.5 * torch.randn(8192, 16)
    full = feature_space_cka(x, y).item()  # equal to linear_cka (tested above), without an 8192^2 Gram matrix
    errors = [abs(minibatch_cka(x[:n].split(256), y[:n].split(256)).item() - full) for n in (512, 8192)]
    assert errors[1] < 0.01 and errors[1] <= errors[0] + 1e-3


@pytest.mark.parametrize("name,stages", [("resnet18", ["act1", "layer1", "layer2", "layer3", "layer4"]),
                                         ("resnetv2_18", ["stem.conv"] + [f"stages.{i}" for i in range(4)])])
def test_cnn_layer_features_equal_timm_features_only(name, stages):
    """timm's forward_intermediates (the extractor's path) against features_only, for a ResNet and a pre-activation
    ResNetV2 (the BiT layout), and against forward hooks on the same modules."""
    cnn = perturb_(vitlens.create_cnn(name, in_chans=1, num_classes=3), std=0.05).eval()
    ref = timm.create_model(name, features_only=True, pretrained=False, in_chans=1)
    # features_only flattens module paths (stem.conv -> stem_conv): match the names with dots read as underscores
    own = {k.replace(".", "_"): v for k, v in cnn.state_dict().items()}
    ref.load_state_dict({k: own[k.replace(".", "_")] for k in ref.state_dict()})
    x = torch.randn(2, 1, 64, 64)
    feats = layer_features(cnn, x)
    with torch.no_grad():
        want = ref.eval()(x)
        hooked, logits = _hooked(cnn, x, stages, pre_logits=False)
        torch.testing.assert_close(logits, cnn(x))
    assert list(feats) == stages
    for got, w, h in zip(feats.values(), want, hooked.values()):
        torch.testing.assert_close(got, w.flatten(1))
        torch.testing.assert_close(got, h.flatten(1))
    picked, _ = layer_outputs(cnn, x, [-1, 1])  # indices, in network order
    assert list(picked) == [stages[1], stages[-1]]


def test_vit_layer_outputs_are_the_block_outputs_written_out():
    vit = perturb_(vitlens.create_model("vit_ti16", img_size=(24, 32), patch_size=8, embed_dim=32, depth=3,
                                        num_heads=4, mlp_dim=64, num_classes=5)).eval()
    x = torch.randn(2, 3, 24, 32)
    with torch.no_grad():
        outputs, logits = layer_outputs(vit, x, ["block 1", "block 3"])
        z = vit.patch_embed(x)  # eq. 1, then the blocks one by one
        z = torch.cat([vit.cls_token.expand(2, -1, -1), z], dim=1) + vit.pos_embed
        want = []
        for blk in vit.blocks:
            z = blk(z)
            want.append(z)
        torch.testing.assert_close(logits, vit.head(vit.norm(z)[:, 0]))
    torch.testing.assert_close(outputs["block 1"], want[0])
    torch.testing.assert_close(outputs["block 3"], want[2])
    pooled = layer_features(vit, x, layers=[1], pooled=True, pre_logits=True)
    torch.testing.assert_close(pooled["block 2"], want[1][:, 0])
    torch.testing.assert_close(pooled["pre_logits"], vit.norm(z)[:, 0])


def test_layer_similarity_vit_against_itself_and_cnn():
    vit = perturb_(vitlens.create_model("vit_ti16", img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=3,
                                        num_heads=4, mlp_dim=64, num_classes=10)).eval()
    cnn = vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True).eval()
    loader = [torch.rand(8, 1, 28, 28) for _ in range(3)] + [torch.rand(2, 1, 28, 28)]  # the last is skipped
    same = layer_similarity(vit, vit, loader, progress=False)
    assert same["cka"].shape == (3, 3) and same["count"] == 24
    torch.testing.assert_close(same["cka"].diagonal(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(same["cka"], same["cka"].T)
    cross = layer_similarity(vit, cnn, loader, progress=False, max_batches=2)
    assert cross["cka"].shape == (3, 5) and cross["layers_b"][-1] == "layer4" and cross["count"] == 16
    assert torch.all(cross["cka"] > 0) and torch.all(cross["cka"] <= 1 + 1e-9)
