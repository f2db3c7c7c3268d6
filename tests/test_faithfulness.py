"""Deletion / insertion curves against closed forms on a linear 'model'."""
import numpy as np
import torch
from torch import nn

from vitlens.analysis.faithfulness import perturbation_curve

N = 10  # 10 x 10 single-channel image: 100 pixels


class PixelSum(nn.Module):
    """One logit: sum_i w_i x_i (and a constant 0 logit, so the softmax is a sigmoid of the sum)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_deletion_of_ranked_pixels_matches_closed_form():
    # w_p = p, x = 1: deleting the top n of the 100 pixels leaves sum_{p < 100 - n} p = (100 - n)(99 - n) / 2
    w = torch.arange(N * N, dtype=torch.float64).view(1, 1, N, N)
    model, x = PixelSum(w), torch.ones(1, 1, N, N, dtype=torch.float64)
    out = perturbation_curve(model, x, w[0, 0], 0, mode="deletion", steps=10, output="logit")
    n = np.arange(0, 101, 10)
    expected = (100 - n) * (99 - n) / 2
    np.testing.assert_allclose(out["fractions"], n / 100)
    np.testing.assert_allclose(out["scores"], expected)
    np.testing.assert_allclose(out["auc"], np.sum((expected[1:] + expected[:-1]) / 2 * 0.1))
    # the reversed ranking deletes the smallest first: a larger (worse) deletion AUC
    worse = perturbation_curve(model, x, -w[0, 0], 0, mode="deletion", steps=10, output="logit")
    np.testing.assert_allclose(worse["scores"], 4950 - n * (n - 1) / 2)
    assert worse["auc"] > out["auc"]


def test_insertion_into_zero_baseline_and_probability_output():
    # insertion with a zero baseline: after the top n pixels, sum_{p >= 100 - n} p
    w = torch.arange(N * N, dtype=torch.float64).view(1, 1, N, N) / 1000
    model, x = PixelSum(w), torch.ones(1, 1, N, N, dtype=torch.float64)
    n = np.arange(0, 101, 20)
    logit = (4950 - (100 - n) * (99 - n) / 2) / 1000
    out = perturbation_curve(model, x, w[0, 0], 0, mode="insertion", steps=5, baseline=torch.zeros_like(x))
    np.testing.assert_allclose(out["scores"], 1 / (1 + np.exp(-logit)))  # softmax of (s, 0) is sigmoid(s)


def test_uniform_image_gives_linear_ramp_auc_one_half():
    # every pixel worth 1/100: deleting a fraction t leaves 1 - t whatever the ranking; AUC of the ramp = 1/2
    model = PixelSum(torch.full((1, 1, N, N), 0.01, dtype=torch.float64))
    x = torch.ones(1, 1, N, N, dtype=torch.float64)
    out = perturbation_curve(model, x, torch.rand(3, 3, dtype=torch.float64), 0, steps=4, output="logit")
    np.testing.assert_allclose(out["scores"], 1 - out["fractions"])
    np.testing.assert_allclose(out["auc"], 0.5)


def test_coarse_map_is_upsampled_and_batches_do_not_change_the_curve():
    w = torch.randn(1, 3, 12, 12, dtype=torch.float64)
    model, x = PixelSum(w), torch.randn(1, 3, 12, 12, dtype=torch.float64)
    sal = torch.rand(3, 3, dtype=torch.float64)
    a = perturbation_curve(model, x, sal, 0, steps=12, batch_size=2)
    b = perturbation_curve(model, x, sal, 0, steps=12, batch_size=64)
    np.testing.assert_allclose(a["scores"], b["scores"])
    assert a["scores"].shape == (13,)


def test_curves_figure_gives_each_method_one_colour_in_both_panels_and_every_curve_a_legend_entry():
    """Issue 15's wrong chart: the insertion panel's curves took Plotly's default colours while the legend listed
    only the deletion traces. Each method's four curves (deletion and insertion, MoRF and LeRF) must carry one colour
    set on the trace, the methods' colours must differ, and every curve must match a legend entry in colour and dash
    that names its method and order."""
    from vitlens.analysis.figures import faithfulness_curves_figure

    rng = np.random.default_rng(0)
    methods = ["ViT rollout", "ViT gradient rollout", "ViT IG", "CNN Grad-CAM", "CNN IG", "ViT random"]
    fractions = {mode: np.linspace(0, 1, 9) for mode in ("deletion", "insertion")}
    curves = {m: {mode: {o: rng.random(9) for o in ("morf", "lerf")} for mode in fractions} for m in methods}
    fig = faithfulness_curves_figure(fractions, curves, "title")
    assert len(fig.data) == len(methods) * 2 * 2
    colour = {}
    for t in fig.data:
        assert t.line.color is not None, t.name  # set on the trace, not left to the renderer's cycle
        colour.setdefault(t.legendgroup, set()).add(t.line.color)
    assert set(colour) == set(methods) and all(len(c) == 1 for c in colour.values())
    assert len({c.pop() for c in colour.values()}) == len(methods)  # methods told apart
    entries = {(t.legendgroup, t.line.color, t.line.dash): t.name for t in fig.data if t.showlegend is not False}
    for t in fig.data:
        name = entries[(t.legendgroup, t.line.color, t.line.dash)]
        assert name.startswith(t.legendgroup) and ("MoRF" in name) == (t.line.dash == "solid"), name
    panels = {m: {t.xaxis for t in fig.data if t.legendgroup == m} for m in methods}
    assert all(p == {"x", "x2"} for p in panels.values())  # deletion and insertion panels both draw each method


def test_deletion_curves_agree_with_quantus_pixel_flipping_on_both_bundled_models():
    """Quantus 0.6's PixelFlipping is the same definition (pixels switched to a baseline most relevant first, a fixed
    number a step, the target's softmax after each step), written independently: one forward pass per step."""
    import quantus

    import vitlens
    from vitlens.analysis import faithfulness
    from vitlens.data import load_tensors
    from vitlens.images import prepare

    images, labels = load_tensors("test", 6)
    relevance = torch.rand(6, 28, 28, generator=torch.Generator().manual_seed(0))  # continuous: no ties to break
    metric = quantus.PixelFlipping(features_in_step=49, perturb_baseline=0.0, disable_warnings=True,
                                   display_progressbar=False)
    for name in ("demo:vit-fashion", "demo:cnn-fashion"):
        model = vitlens.load_model(name).eval()
        x = prepare(images, model.data_config)  # the "mean" baseline is 0 in the model's input space
        ours = faithfulness(model, x, relevance, labels, baseline="mean", steps=16).curves["deletion"]["morf"]
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=labels.numpy(), a_batch=relevance[:, None].numpy(),
                        device="cpu", softmax=True)
        np.testing.assert_allclose(ours[:, 1:], np.array(theirs), atol=1e-5)  # Quantus starts after the first step
