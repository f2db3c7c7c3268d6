"""One committed number per results file under analyses/results/, recomputed from what it was made of (the bundled
weights, the first Fashion-MNIST test images, or the file's own per-image records)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vitlens
from vitlens import load_model
from vitlens.data import read_idx
from vitlens.data.fashion_mnist import locate
from vitlens.models.loading import WEIGHTS_DIR

RESULTS = Path(__file__).resolve().parents[1] / "analyses" / "results"


def committed(path: str) -> dict:
    return json.loads((RESULTS / path).read_text())


def fashion(n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first n test images from the raw IDX bytes, normalised with the demo ViT's mean and std, and labels."""
    images, labels = locate("test")
    x = torch.from_numpy(np.array(read_idx(images)[:n])).float()[:, None] / 255
    config = load_model("demo:vit-fashion").data_config
    return (x - config["mean"][0]) / config["std"][0], read_idx(labels)[:n].astype(np.int64)


@pytest.mark.parametrize("model", ["vit-fashion", "vit-fashion-ft"])
def test_position_similarity_and_filters_from_the_bundled_weights(model):
    table = load_file(str(WEIGHTS_DIR / f"{model}.safetensors"))["pos_embed"][0, 1:].double()
    unit = table / table.norm(dim=1, keepdim=True)
    g = int(len(table) ** 0.5)
    np.testing.assert_allclose(committed(f"figure7/{model}/posembed.json")["posembed"],
                               (unit @ unit.T).reshape(g, g, g, g).numpy(), atol=1e-5)
    w = load_file(str(WEIGHTS_DIR / f"{model}.safetensors"))["patch_embed.proj.weight"].flatten(1).double().numpy()
    s = np.linalg.svd(w - w.mean(0), compute_uv=False)
    np.testing.assert_allclose(committed(f"figure7/{model}/filters.json")["explained_variance_ratio"],
                               (s ** 2 / (s ** 2).sum())[:16], rtol=1e-4)


def test_bias_occlusion_clean_accuracy_and_figure6_predictions():
    """The ViT's occlusion accuracy with nothing dropped is its accuracy on the 500 images; figure 6's top class of
    the first six images is its argmax."""
    x, labels = fashion(500)
    with torch.no_grad():
        logits = load_model("demo:vit-fashion")(x)
    occlusion = committed("bias/translation.json")["occlusion"]["vit-fashion"]
    clean = occlusion["drop"]["accuracy"][occlusion["drop"]["fraction"].index(0.0)]
    assert clean == pytest.approx((logits.argmax(-1).numpy() == labels).mean(), abs=1e-9)
    rollout = committed("figure6/vit-fashion/fashion_mnist/rollout.json")
    assert [row[0] for row in rollout["top5_classes"]] == logits[:6].argmax(-1).tolist()


def test_sweep_summary_from_its_records():
    """sweep.json's per-size means from its own records, which are the two per-seed files' records."""
    sweep = committed("bias/sweep.json")
    seeds = [r for s in (0, 1) for r in committed(f"bias/sweep-seed{s}.json")["records"]]
    key = lambda r: (r["arch"], r["size"], r["seed"])  # noqa: E731
    assert sorted(map(key, sweep["records"])) == sorted(map(key, seeds))
    for arch, summary in sweep["summary"].items():
        for size, mean in zip(summary["size"], summary["mean"]):
            accs = [r["test_acc"] for r in sweep["records"] if r["arch"] == arch and r["size"] == size]
            assert mean == pytest.approx(np.mean(accs), abs=1e-9)


@pytest.mark.parametrize("model", ["vit-fashion", "cnn-fashion"])
def test_explain_table_means_from_its_per_image_aucs(model):
    numbers = committed(f"explain/{model}/explain.json")
    for row in numbers["table"]:
        per_image = numbers["per_image"][row["method"]][row["baseline"]]
        assert row["deletion MoRF"]["mean"] == pytest.approx(np.mean(per_image["deletion MoRF"]), abs=1e-6)
        srg = np.subtract(per_image["deletion LeRF"], per_image["deletion MoRF"])
        assert row["SRG"]["mean"] == pytest.approx(srg.mean(), abs=1e-6) and len(srg) == 1000


def test_attention_distance_of_the_bundled_vit_over_128_images():
    """Figure 7 right: per layer and head, patch rows renormalised, distances 4 px x hypot on the 7 x 7 grid."""
    x, _ = fashion(128)
    model = load_model("demo:vit-fashion")
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(x)
    cells = [(r, c) for r in range(7) for c in range(7)]
    dist = torch.tensor([[4 * math.hypot(r1 - r2, c1 - c2) for r2, c2 in cells] for r1, c1 in cells],
                        dtype=torch.float64)
    want = []
    for a in rec.attentions:
        p = a.double()[:, :, 1:, 1:]
        want.append(torch.einsum("bhij,ij->bhi", p / p.sum(-1, keepdim=True), dist).mean(-1).mean(0).tolist())
    np.testing.assert_allclose(committed("figure7/vit-fashion/attention_distance.json")["mean"], want, rtol=1e-5)
