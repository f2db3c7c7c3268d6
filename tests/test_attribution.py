"""Grad-CAM and Integrated Gradients against their closed forms on models whose gradients are known."""
import torch
from torch import nn

import vitlens
from vitlens.analysis.attribution import grad_cam, integrated_gradients


def test_grad_cam_equals_relu_of_head_weighted_maps():
    # conv -> GAP -> linear: dy_c/dA_k(i, j) = W_ck / (h w), so Grad-CAM = ReLU(sum_k W_ck A_k) / (h w)
    model = vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                               channels=(8, 16, 32, 64)).eval()
    x = torch.randn(3, 1, 28, 28)
    target = torch.tensor([0, 4, 9])
    with torch.no_grad():
        maps = model.forward_features(x)  # timm ResNet: the output of layer4, the last stage
    h, w = maps.shape[-2:]
    weights = model.fc.weight[target]  # B x K
    expected = torch.relu(torch.einsum("bk,bkhw->bhw", weights, maps)) / (h * w)
    cam = grad_cam(model, x, target, upsample=False)
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)
    assert grad_cam(model, x, target).shape == (3, 28, 28)


def test_grad_cam_default_target_is_the_prediction():
    model = vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                               channels=(8, 16, 32, 64)).eval()
    x = torch.randn(2, 1, 28, 28)
    pred = model(x).argmax(-1)
    torch.testing.assert_close(grad_cam(model, x), grad_cam(model, x, pred))


def test_integrated_gradients_linear_model_is_input_times_weight():
    # f(x) = w . x + b: the gradient is w everywhere on the path, so IG = (x - x') * w exactly
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    x, base = torch.randn(2, 2, 5, 5), torch.randn(1, 2, 5, 5)
    ig = integrated_gradients(model, x, 1, baseline=base, steps=4)
    torch.testing.assert_close(ig, (x - base) * model[1].weight[1].view(1, 2, 5, 5))


def test_integrated_gradients_quadratic_closed_form_and_completeness():
    # f(x) = sum a x^2 along x' + t (x - x'): IG_i = a_i (x_i^2 - x'_i^2); the integrand is linear in t, so
    # Gauss-Legendre quadrature is exact
    a = torch.randn(1, 3, 4, 4)

    class Quadratic(nn.Module):
        def forward(self, x):
            return (a * x ** 2).flatten(1).sum(1, keepdim=True)

    x, base = torch.randn(2, 3, 4, 4), 0.5
    ig = integrated_gradients(Quadratic(), x, 0, baseline=base, steps=2)
    torch.testing.assert_close(ig, a * (x ** 2 - base ** 2), rtol=1e-5, atol=1e-5)


def test_integrated_gradients_vit_completeness():
    model = vitlens.create_model("vit_ti16", img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2,
                                 num_heads=2, mlp_dim=64, num_classes=5).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    x = torch.randn(1, 1, 16, 16)
    ig = integrated_gradients(model, x, 2, steps=64)
    with torch.no_grad():
        gap = model(x)[0, 2] - model(torch.zeros_like(x))[0, 2]
    torch.testing.assert_close(ig.sum(), gap, rtol=2e-2, atol=2e-3)
