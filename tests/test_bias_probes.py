"""Inductive-bias probes against closed forms: receptive-field arithmetic, exact equivariance by construction,
identity perturbations."""
import json
import math

import pytest
import torch
from conftest import perturb_
from torch import nn

import vitlens
from vitlens.bias import (drop_patches, effective_receptive_field, equivariance_error, erf_probe, mass_radius,
                          occlusion_probe, shift_images, shuffle_patches, translation_probe)
from vitlens.bias.maps import layer_maps


def ones_conv(k: int, stride: int = 1, channels: int = 2, padding_mode: str = "zeros") -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, k, stride, k // 2, bias=False, padding_mode=padding_mode)
    nn.init.ones_(conv.weight)
    return conv


def support(erf: torch.Tensor) -> tuple[int, int]:
    rows, cols = torch.nonzero(erf > 0, as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def theoretical_rf(kernels, strides):
    """r_l = r_{l-1} + (k_l - 1) j_{l-1}, j_l = j_{l-1} s_l (the textbook receptive-field recursion)."""
    r, j, out = 1, 1, []
    for k, s in zip(kernels, strides):
        r, j = r + (k - 1) * j, j * s
        out.append(r)
    return out


def test_erf_support_equals_theoretical_receptive_field():
    kernels, strides = (3, 3, 5), (1, 2, 1)
    # Positive kernels and ReLUs on positive inputs: no gradient cancels, so the support is the whole field.
    model = nn.Sequential(ones_conv(3), nn.ReLU(), ones_conv(3, 2), nn.ReLU(), ones_conv(5))
    images = torch.rand(3, 2, 32, 32) + 0.1
    erfs, _ = effective_receptive_field(model, images, layers=["0", "2", "4"])
    assert [support(e) for e in erfs.values()] == [(r, r) for r in theoretical_rf(kernels, strides)] \
        == [(3, 3), (5, 5), (13, 13)]


def test_erf_of_two_box_filters_is_their_convolution():
    # Two 3x3 all-ones convs, one input channel: d y_centre / d x = t t^T with t = [1, 2, 3, 2, 1] (box * box).
    model = nn.Sequential(ones_conv(3, channels=1), ones_conv(3, channels=1))
    erfs, centres = effective_receptive_field(model, torch.randn(2, 1, 15, 15), layers=["1"])
    t = torch.tensor([1.0, 2, 3, 2, 1], dtype=torch.float64)
    expected = torch.zeros(15, 15, dtype=torch.float64)
    expected[5:10, 5:10] = torch.outer(t, t)
    torch.testing.assert_close(erfs["1"], expected)
    assert centres["1"] == (7.0, 7.0)


def test_mass_radius_closed_form():
    erf = torch.zeros(11, 11)
    erf[5, 5] = 6.0           # 60 % of the mass at the centre
    erf[5, 8] = 3.0           # 30 % at distance 3
    erf[9, 8] = 1.0           # 10 % at distance 5
    assert mass_radius(erf, (5, 5), (0.5, 0.6, 0.9, 1.0)) == [0.0, 0.0, 3.0, 5.0]


def test_a_layer_whose_centre_unit_is_dead_gets_no_radius_and_the_others_do():
    from vitlens.analysis.figures import jsonable

    dead = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        dead.weight.fill_(1.0), dead.bias.fill_(-1e3)  # below zero on every image: the ReLU after passes nothing back
    model = nn.Sequential(ones_conv(3, channels=1), nn.ReLU(), dead, nn.ReLU(), ones_conv(3, channels=1))
    out = erf_probe(model, torch.rand(2, 1, 15, 15), layers=["1", "3", "4"])
    assert out["zero"] == ["3", "4"]  # after the dead layer nothing depends on the input either
    assert out["radius"]["0.5"][0] > 0 and all(math.isnan(r) for r in out["radius"]["0.5"][1:])
    assert json.loads(json.dumps(jsonable(out["radius"])))["0.9"][1:] == [None, None]


def test_erf_probe_on_vit_reports_every_block():
    model = perturb_(vitlens.VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=16,
                                               depth=2, num_heads=2, mlp_dim=32)).eval()
    out = erf_probe(model, torch.randn(4, 1, 16, 16))
    assert out["layers"] == ["block 1", "block 2"]
    assert out["centre"]["block 1"] == [9.5, 9.5]  # token (2, 2) covers pixels 8..11
    for r50, r90 in zip(out["radius"]["0.5"], out["radius"]["0.9"]):
        assert 0 < r50 <= r90


class CircularConvNet(nn.Module):
    """Exactly translation-invariant by construction: stride-1 circular convs, then global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv2d(8, 8, 5, padding=2, padding_mode="circular")
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_circular_conv_net_has_zero_equivariance_error_for_every_shift():
    out = translation_probe(CircularConvNet(), torch.randn(6, 1, 16, 16), range(17), layers=["conv1", "conv2"])
    assert out["stride"] == 1.0 and all(out["whole_patch"])
    for errors in out["equivariance"].values():
        assert max(errors) < 1e-6
    assert out["consistency"] == [1.0] * 17


def small_vit(**kw) -> vitlens.VisionTransformer:
    return perturb_(vitlens.VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=32,
                                              depth=2, num_heads=2, mlp_dim=64, **kw), std=0.2).eval()


def test_vit_whole_patch_shifts_break_equivariance_only_through_position_embeddings():
    images = torch.randn(6, 1, 16, 16)
    shifts = [0, 1, 2, 4, 8]
    vit = small_vit()
    out = translation_probe(vit, images, shifts)
    assert out["stride"] == 4.0 and out["whole_patch"] == [True, False, False, True, True]
    last = out["equivariance"]["block 2"]
    assert last[0] < 1e-12
    assert last[3] > 1e-3 and last[4] > 1e-3  # measurable at whole-patch shifts

    # Without position embeddings a whole-patch shift permutes the tokens, which attention and the MLP follow
    # exactly; a sub-patch shift changes the patches' content and still breaks equivariance.
    with torch.no_grad():
        vit.pos_embed.zero_()
    out = translation_probe(vit, images, shifts)
    for errors in out["equivariance"].values():
        assert errors[3] < 1e-6 and errors[4] < 1e-6
        assert errors[1] > 1e-3 and errors[2] > 1e-3


def test_identity_perturbations_leave_the_image_unchanged():
    images = torch.randn(5, 3, 28, 28)
    assert torch.equal(shuffle_patches(images, 1), images)
    assert torch.equal(drop_patches(images, 4, 0.0), images)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 1.0])
def test_drop_patches_removes_exactly_that_share(fraction):
    images = torch.rand(4, 1, 28, 28) + 1.0  # never 0, so dropped pixels are the zeros
    dropped = drop_patches(images, 4, fraction, torch.Generator().manual_seed(0))
    per_patch_zero = (dropped == 0).reshape(4, 7, 4, 7, 4).all(dim=4).all(dim=2)
    assert per_patch_zero.sum(dim=(1, 2)).tolist() == [round(fraction * 49)] * 4
    assert torch.equal(dropped[dropped != 0], images[dropped != 0])


def pieces(images: torch.Tensor, side: int) -> list[list[list[float]]]:
    """Per image, its side x side pieces (flattened), sorted: equal for two images iff one permutes the other."""
    b = images.shape[0]
    return [sorted(p) for p in images.unfold(2, side, side).unfold(3, side, side).reshape(b, -1, side * side).tolist()]


def test_shuffle_permutes_pieces():
    images = torch.arange(2 * 64.0).reshape(2, 1, 8, 8)
    shuffled = shuffle_patches(images, 4, torch.Generator().manual_seed(1))
    assert not torch.equal(shuffled, images)
    assert pieces(shuffled, 2) == pieces(images, 2)


def test_vit_without_position_embeddings_ignores_shuffling_at_its_patch_grid():
    vit = small_vit(pool="gap")
    with torch.no_grad():
        vit.pos_embed.zero_()
    images = torch.randn(32, 1, 16, 16)
    labels = vit(images).argmax(-1)
    out = occlusion_probe(vit, images, labels, drop_fractions=(0.0, 0.5), shuffle_grids=(1, 4))
    assert out["drop"]["accuracy"][0] == 1.0 and out["shuffle"]["accuracy"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="patch_size"):
        occlusion_probe(CircularConvNet(), images, labels)


@pytest.mark.parametrize("unit", [1, 2, 4, 7])
@pytest.mark.parametrize("axis", ["x", "y", "xy"])
def test_equivariance_error_is_the_definition_on_upsampled_maps(unit, axis):
    """Against the definition written out: each unit repeated over its unit x unit pixels, the reference rolled by
    the shift, 1 - cos per pixel, mean over pixels (with zero vectors, as ReLU maps have)."""
    torch.manual_seed(unit)
    size = 28
    ref, cur = (torch.randn(3, 5, size // unit, size // unit, dtype=torch.float64).clamp_min(-0.5) for _ in range(2))
    ref[:, :, 0, 0] = cur[:, :, 0, 0] = 0
    up = lambda m: m.repeat_interleave(unit, -2).repeat_interleave(unit, -1)  # noqa: E731
    for shift in (0, 1, 3, unit, 2 * unit + 1, size - 1):
        a, b = shift_images(up(ref), shift, axis), up(cur)
        norms = a.norm(dim=1) * b.norm(dim=1)
        cos = torch.where(norms > 0, (a * b).sum(1) / norms, 0.0)  # one zero vector: orthogonal to anything
        cos = torch.where((a.abs().amax(1) == 0) & (b.abs().amax(1) == 0), 1.0, cos)  # both zero: equal
        want = (1 - cos).mean(dim=(1, 2))
        torch.testing.assert_close(equivariance_error(ref, cur, shift, (size, size), axis), want, rtol=0, atol=1e-12)


def test_drop_patches_on_a_non_square_image_zeroes_whole_patches():
    """An 8 x 12 image of 4-pixel patches (2 x 3 grid): each patch, found by a loop over (r, c), is all zero or
    untouched, and exactly round(0.5 x 6) = 3 are zero."""
    images = torch.rand(3, 2, 8, 12) + 1.0
    dropped = drop_patches(images, 4, 0.5, torch.Generator().manual_seed(0))
    for b in range(3):
        zero = 0
        for r in range(2):
            for c in range(3):
                patch, original = dropped[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4], images[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]
                assert torch.equal(patch, torch.zeros_like(patch)) or torch.equal(patch, original)
                zero += int(torch.equal(patch, torch.zeros_like(patch)))
        assert zero == 3


def test_shuffle_permutes_the_pieces_of_a_non_square_image():
    images = torch.arange(2 * 8 * 12.0).reshape(2, 1, 8, 12)
    shuffled = shuffle_patches(images, 2, torch.Generator().manual_seed(3))  # pieces of 4 x 6 pixels
    want = [sorted(images[b, 0, 4 * r:4 * r + 4, 6 * c:6 * c + 6].flatten().tolist() for r in range(2) for c in range(2))
            for b in range(2)]
    got = [sorted(shuffled[b, 0, 4 * r:4 * r + 4, 6 * c:6 * c + 6].flatten().tolist() for r in range(2) for c in range(2))
           for b in range(2)]
    assert got == want and not torch.equal(shuffled, images)


def test_erf_centre_unit_of_a_non_square_map():
    """A 13 x 13 theoretical field (three convs) on 20 x 32 images: the gradient's support is the field around the
    centre unit (10, 16), row and column not swapped."""
    model = nn.Sequential(ones_conv(3), nn.ReLU(), ones_conv(3, 2), nn.ReLU(), ones_conv(5))
    erfs, centres = effective_receptive_field(model, torch.rand(2, 2, 20, 32) + 0.1, layers=["4"])
    rows, cols = torch.nonzero(erfs["4"] > 0, as_tuple=True)
    # the stride-2 output is 10 x 16; its centre unit (5, 8) sits on input pixel (10, 16), the field 10 +- 6
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (4, 16, 10, 22)
    assert centres["4"] == (10.5, 16.5)


def test_vit_on_a_non_square_grid_is_equivariant_to_whole_patch_shifts_along_each_axis():
    """A ViT without position embeddings on 16 x 24 images (4 x 6 patches): a whole-patch shift along x, y or both
    permutes the tokens (error 0), a sub-patch shift does not; token maps laid out row-major, as a loop says."""
    vit = perturb_(vitlens.VisionTransformer(img_size=(16, 24), patch_size=4, in_chans=1, num_classes=4, embed_dim=32,
                                             depth=2, num_heads=2, mlp_dim=64), std=0.2).eval()
    with torch.no_grad():
        vit.pos_embed.zero_()
    images = torch.randn(3, 1, 16, 24)
    for axis in ("x", "y", "xy"):
        out = translation_probe(vit, images, [4, 2], axis=axis)
        for errors in out["equivariance"].values():
            assert errors[0] < 1e-6 and errors[1] > 1e-3, axis
    with torch.no_grad():
        maps, _ = layer_maps(vit, images, ["block 1"])
        with vitlens.capture(vit, attentions=False, tokens=True) as rec:
            vit(images)
    for r in range(4):
        for c in range(6):
            torch.testing.assert_close(maps["block 1"][:, :, r, c], rec.tokens[0][:, 1 + r * 6 + c])
