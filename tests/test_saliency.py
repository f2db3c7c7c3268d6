"""The ViT-vs-CNN saliency set and its deletion/insertion curves (what the app's ViT vs CNN page draws)."""
import numpy as np
import pytest
import torch
from conftest import perturb_
from sklearn.metrics import auc

import vitlens
from vitlens.analysis import auc_table, deletion_insertion, saliency_maps
from vitlens.images import prepare


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    vit = perturb_(vitlens.create_model("vit_ti16", img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=2,
                                        num_heads=2, mlp_dim=32, num_classes=10), std=0.1).eval()
    cnn = perturb_(vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                                      channels=(8, 8, 8, 8)), std=0.1).eval()
    x = torch.rand(1, 1, 28, 28)  # an image in [0, 1]
    return vit, prepare(x, vit.data_config), cnn, prepare(x, cnn.data_config)


def test_saliency_maps_shapes_targets_and_integrated_gradients_completeness(pair):
    vit, xv, cnn, xc = pair
    maps = saliency_maps(vit, xv, cnn, xc, vit_target=3, cnn_target=5, ig_steps=64)
    assert list(maps) == ["ViT rollout", "ViT gradient rollout", "ViT IG", "CNN Grad-CAM", "CNN IG"]
    assert [(s.model, s.target) for s in maps.values()] == [("vit", 3)] * 3 + [("cnn", 5)] * 2
    assert maps["ViT rollout"].map.shape == maps["ViT gradient rollout"].map.shape == (7, 7)
    assert maps["ViT IG"].map.shape == maps["CNN IG"].map.shape == maps["CNN Grad-CAM"].map.shape == (28, 28)
    # IG from a black image: its attributions sum to logit(x) - logit(black) (Sundararajan et al.'s completeness),
    # up to the quadrature error: tiny for the smooth ViT, larger for the CNN's ReLU kinks along the path
    for name, model, x, t, tol in (("ViT IG", vit, xv, 3, 1e-3), ("CNN IG", cnn, xc, 5, 3e-2)):
        black = prepare(torch.zeros(1, 1, 28, 28), model.data_config)
        with torch.no_grad():
            gap = (model(x)[0, t] - model(black)[0, t]).item()
        assert maps[name].map.sum().item() == pytest.approx(gap, rel=tol)


def test_deletion_insertion_curves_start_and_end_at_the_models_probabilities(pair):
    vit, xv, cnn, xc = pair
    maps = saliency_maps(vit, xv, cnn, xc, vit_target=3, cnn_target=5, ig_steps=8)
    curves = deletion_insertion(maps, {"vit": (vit, xv), "cnn": (cnn, xc)}, steps=8)
    with torch.no_grad():
        clean = {"vit": vit(xv).softmax(-1)[0, 3].item(), "cnn": cnn(xc).softmax(-1)[0, 5].item()}
    for name, s in maps.items():
        deletion, insertion = curves[name]["deletion"], curves[name]["insertion"]
        np.testing.assert_allclose(deletion["fractions"], np.linspace(0, 1, 9))
        assert deletion["scores"][0] == pytest.approx(clean[s.model], abs=1e-5)  # nothing deleted yet
        assert insertion["scores"][-1] == pytest.approx(clean[s.model], abs=1e-5)  # everything inserted
        for c in (deletion, insertion):
            assert c["auc"] == pytest.approx(auc(c["fractions"], c["scores"]))
    rows = auc_table(maps, curves)
    assert [r["map"] for r in rows] == list(maps) and rows[3]["model"] == "cnn" and rows[3]["class"] == 5
    assert rows[0]["deletion AUC"] == curves["ViT rollout"]["deletion"]["auc"]
