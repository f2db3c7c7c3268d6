"""resize_pos_embed against timm's resample_abs_pos_embed and the official code's scipy.ndimage.zoom."""
import numpy as np
import pytest
import scipy.ndimage
import torch
from timm.layers import resample_abs_pos_embed

import vitlens


@pytest.mark.parametrize("old,new,prefix", [((14, 14), (24, 24), 1), ((14, 14), (7, 7), 1),
                                            ((7, 9), (14, 18), 1), ((14, 14), (24, 16), 0)])
def test_bicubic_and_bilinear_match_timm(old, new, prefix):
    pe = torch.randn(1, prefix + old[0] * old[1], 32)
    ours = vitlens.resize_pos_embed(pe, new, old_grid=old, num_prefix_tokens=prefix)
    ref = resample_abs_pos_embed(pe, list(new), old_size=list(old), num_prefix_tokens=prefix)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    ours = vitlens.resize_pos_embed(pe, new, old_grid=old, num_prefix_tokens=prefix, mode="bilinear")
    ref = resample_abs_pos_embed(pe, list(new), old_size=list(old), num_prefix_tokens=prefix,
                                 interpolation="bilinear", antialias=False)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("old,new", [((14, 14), (24, 24)), ((24, 24), (14, 14)), ((7, 9), (12, 20)),
                                     ((2, 8), (4, 4))])  # as many slots, another shape: must still resample
def test_jax_mode_matches_official_scipy_zoom(old, new):
    pe = torch.randn(1, 1 + old[0] * old[1], 16, dtype=torch.float64)
    ours = vitlens.resize_pos_embed(pe, new, old_grid=old, mode="jax")
    # The official code (vit_jax/checkpoint.py): zoom the grid with order=1, keep the class slot.
    grid = pe[0, 1:].numpy().reshape(*old, -1)
    zoomed = scipy.ndimage.zoom(grid, (new[0] / old[0], new[1] / old[1], 1), order=1)
    ref = np.concatenate([pe[0, :1].numpy(), zoomed.reshape(new[0] * new[1], -1)])
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=1e-5)
    assert torch.equal(ours[0, 0], pe[0, 0])


def test_square_grid_is_inferred_and_bad_grids_are_named():
    pe = torch.randn(1, 1 + 49, 8)
    assert vitlens.resize_pos_embed(pe, (14, 14)).shape == (1, 1 + 196, 8)
    with pytest.raises(ValueError, match="not a square"):
        vitlens.resize_pos_embed(torch.randn(1, 1 + 50, 8), (14, 14))
    with pytest.raises(ValueError, match="unknown position-embedding resize mode"):
        vitlens.resize_pos_embed(pe, (14, 14), mode="nearest")
