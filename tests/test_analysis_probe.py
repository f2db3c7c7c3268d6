"""Linear probes against scikit-learn fitted directly, and the few-shot solver against numpy least squares."""
import numpy as np
import pytest
import torch
from conftest import perturb_
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import vitlens
from vitlens.analysis import fewshot_eval, fewshot_ridge, linear_probe
from vitlens.analysis.probe import sample_shots
from vitlens.images import prepare


def ridge_by_lstsq(x, y, test_x, num_classes, lam):
    """Ridge as ordinary least squares on the augmented system [X; sqrt(lam) I] W = [T; 0]."""
    mean = x.mean(0)
    x, test_x = x - mean, test_x - mean
    t = 2 * np.eye(num_classes)[y] - 1
    a = np.vstack([x, np.sqrt(lam) * np.eye(x.shape[1])])
    b = np.vstack([t, np.zeros((x.shape[1], num_classes))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return (test_x @ w).argmax(1)


@pytest.mark.parametrize("n,d", [(40, 8), (10, 30)])  # primal and dual branches
def test_fewshot_ridge_matches_numpy_lstsq(n, d):
    rng = np.random.default_rng(0)
    x, test_x = rng.normal(size=(n, d)), rng.normal(size=(500, d))
    y, test_y = np.arange(n) % 4, rng.integers(0, 4, 500)
    x[np.arange(n), y] += 1.0  # some signal so the predictions are not all ties
    want = (ridge_by_lstsq(x, y, test_x, 4, 0.7) == test_y).mean()
    got = fewshot_ridge(torch.tensor(x), torch.tensor(y), torch.tensor(test_x), torch.tensor(test_y), 4, l2_reg=0.7)
    assert got == pytest.approx(want, abs=1e-12)


def test_sample_shots_and_seeds():
    labels = torch.arange(100) % 5
    idx = sample_shots(labels, 3, seed=1)
    assert torch.bincount(labels[idx]).tolist() == [3] * 5
    assert torch.equal(idx, sample_shots(labels, 3, seed=1)) and not torch.equal(idx, sample_shots(labels, 3, 2))
    x = torch.randn(100, 6) + torch.nn.functional.one_hot(labels, 6).double() * 3
    res = fewshot_eval(x, labels, x, labels, shots=(1, 5), seeds=(0, 1, 2))
    assert set(res) == {1, 5} and len(res[5]["runs"]) == 3 and res[5]["mean"] > 0.5


def hand_class_tokens(model, x):
    """Class token after every block by running the blocks one by one (no capture)."""
    with torch.no_grad():
        z = model.patch_embed(x)
        z = torch.cat([model.cls_token.expand(len(x), -1, -1), z], dim=1) + model.pos_embed
        out = []
        for blk in model.blocks:
            z = blk(z)
            out.append(z[:, 0].numpy())
        out.append(model.norm(z)[:, 0].numpy())
    return out


def test_logistic_probe_matches_sklearn_fitted_directly():
    model = perturb_(vitlens.create_model("vit_ti16", img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2,
                                          num_heads=4, mlp_dim=64, num_classes=3), std=0.3).eval()
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    images = (torch.rand(90, 1, 28, 28, generator=g) * 0.5 + labels.view(-1, 1, 1, 1) * 0.25).clamp(0, 1)
    train = [(images[i:i + 20], labels[i:i + 20]) for i in range(0, 60, 20)]
    test = [(images[60:], labels[60:])]
    got = linear_probe(model, train, test, progress=False)
    assert got["layers"] == ["block 1", "block 2", "pre_logits"] and got["n_train"] == 60
    feats = hand_class_tokens(model, prepare(images, model.data_config))
    for name, f in zip(got["layers"], feats):
        scaler = StandardScaler().fit(f[:60])
        clf = LogisticRegression(max_iter=1000).fit(scaler.transform(f[:60]), labels[:60].numpy())
        assert got["logistic"][name] == pytest.approx(clf.score(scaler.transform(f[60:]), labels[60:].numpy()))
    few = linear_probe(model, train, test, logistic=False, shots=(1, 5), seeds=(0, 1), progress=False)
    assert set(few["fewshot"]["pre_logits"]) == {1, 5}


def test_probe_on_cnn():
    cnn = vitlens.create_cnn("resnet18", in_chans=1, num_classes=3, img_size=28, small_input=True).eval()
    labels = torch.arange(24) % 3
    data = [(torch.rand(12, 1, 28, 28), labels[:12]), (torch.rand(12, 1, 28, 28), labels[12:])]
    got = linear_probe(cnn, data, data, layers=[-1], progress=False)
    assert got["layers"] == ["layer4", "pre_logits"]
    assert 0 <= got["logistic"]["layer4"] <= 1
