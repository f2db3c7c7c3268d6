"""Linear evaluation of frozen representations: logistic-regression probes per layer, and the paper's
few-shot closed-form regularised least squares to {-1, 1}^K targets (section 4.1)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .features import dataset_features

PAPER_SHOTS = (1, 5, 10, 25)


def logistic_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                   C: float = 1.0, max_iter: int = 1000) -> float:
    """Test accuracy of scikit-learn's multinomial logistic regression on standardised features.

    Args:
        train_x: n x d features; train_y: n labels.
        test_x: m x d features; test_y: m labels.
        C: inverse L2 strength.
        max_iter: L-BFGS iterations.
    """
    # scikit-learn on first use (over a second to import): `vitlens pretrain` builds its parser beside
    # `vitlens analyze probe`, which reads PAPER_SHOTS from this module.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    # L-BFGS makes many small BLAS calls; threaded BLAS spin-waits against torch's threads and ran ~10x slower
    # on a shared 2-core machine, so the fit runs single-threaded.
    with threadpool_limits(limits=1):
        clf.fit(train_x.numpy(), train_y.numpy())
        return float(clf.score(test_x.numpy(), test_y.numpy()))


def fewshot_ridge(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                  num_classes: int, l2_reg: float = 1.0) -> float:
    """The paper's few-shot linear evaluation: W = argmin ||X W - T||^2 + l2_reg ||W||^2, T in {-1, 1}^K.

    Features are centred with the training mean (which takes the place of an unregularised bias); the solution
    is closed form, in the primal (d x d system) or, when there are fewer examples than features (the few-shot
    case), the equivalent dual W = X^T (X X^T + l2_reg I)^-1 T.

    Args:
        train_x: n x d features; train_y: n labels in [0, num_classes).
        test_x: m x d features; test_y: m labels.
        num_classes: K.
        l2_reg: ridge strength.

    Returns:
        test accuracy of argmax over the K regressed scores.
    """
    x = train_x.double()
    mean = x.mean(dim=0, keepdim=True)
    x = x - mean
    targets = 2.0 * torch.nn.functional.one_hot(train_y.long(), num_classes).double() - 1.0
    n, d = x.shape
    if n < d:
        w = x.T @ torch.linalg.solve(x @ x.T + l2_reg * torch.eye(n, dtype=x.dtype), targets)
    else:
        w = torch.linalg.solve(x.T @ x + l2_reg * torch.eye(d, dtype=x.dtype), x.T @ targets)
    pred = ((test_x.double() - mean) @ w).argmax(dim=1)
    return float((pred == test_y.long()).double().mean())


def feasible_shots(labels: torch.Tensor, shots: Sequence[int]) -> tuple[list[int], list[int], int, int]:
    """Which few-shot sizes every class can fill from these training labels.

    Returns:
        the sizes that fit, the ones that do not, and the scarcest class with its number of examples.
    """
    classes, counts = torch.as_tensor(labels).unique(return_counts=True)
    fewest = int(counts.argmin())
    limit = int(counts[fewest])
    return ([int(k) for k in shots if k <= limit], [int(k) for k in shots if k > limit], int(classes[fewest]),
            limit)


def sample_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of ``shots`` random examples of every class, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        if len(members) < shots:
            raise ValueError(f"class {int(c)} has {len(members)} examples, fewer than {shots} shots")
        picks.append(members[torch.randperm(len(members), generator=g)[:shots]])
    return torch.cat(picks)


def fewshot_eval(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 shots: Sequence[int] = PAPER_SHOTS, seeds: Sequence[int] = (0, 1, 2),
                 l2_reg: float = 1.0) -> dict[int, dict[str, float | list[float]]]:
    """:func:`fewshot_ridge` at each number of shots per class, over several random draws.

    Returns:
        shots -> ``mean``, ``std`` and ``runs`` (one test accuracy per seed).
    """
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    out = {}
    for k in shots:
        runs = [fewshot_ridge(train_x[idx], train_y[idx], test_x, test_y, num_classes, l2_reg)
                for idx in (sample_shots(train_y, k, s) for s in seeds)]
        out[int(k)] = dict(mean=float(np.mean(runs)), std=float(np.std(runs)), runs=runs)
    return out


@torch.no_grad()
def linear_probe(model: nn.Module, train: Iterable, test: Iterable, *, layers: Sequence[int] | None = None,
                 logistic: bool = True, shots: Sequence[int] | None = None, seeds: Sequence[int] = (0, 1, 2),
                 C: float = 1.0, l2_reg: float = 1.0, progress: bool = True) -> dict[str, object]:
    """Linear evaluation of a frozen model, layer by layer, from one pass over the data.

    Every layer's pooled representation (ViT: class token, or token mean for ``pool="gap"``; CNN: global
    average pooled stage) plus the final ``pre_logits`` representation is read for both splits, then probed with
    logistic regression on the whole training split and, with ``shots``, evaluated by the paper's few-shot
    closed-form regression at those shots per class over ``seeds``.

    Args:
        model: a vitlens ViT or a timm CNN (e.g. ``demo:cnn-fashion``).
        train: (images in [0, 1], labels) batches.
        test: (images in [0, 1], labels) batches.
        layers: indices of blocks / stages; all when None.
        logistic: run the logistic-regression probe.
        shots: e.g. ``(1, 5, 10, 25)`` for few-shot; None (or empty) for none.
        seeds: random draws of the few-shot training examples.
        C: logistic regression's inverse regularisation.
        l2_reg: the few-shot ridge strength.
        progress: show tqdm bars.

    Returns:
        ``layers`` (names, network order, ``pre_logits`` last); ``logistic``: name -> test accuracy (or None);
        ``fewshot``: name -> shots -> {mean, std, runs} (or None); ``n_train``, ``n_test``; ``shots_left_out``: the
        sizes the scarcest class cannot fill (``shots``, ``scarcest_class``, ``count``), or None.
    """
    train_f, train_y = dataset_features(model, train, layers=layers, progress=progress, desc="train features")
    test_f, test_y = dataset_features(model, test, layers=layers, progress=progress, desc="test features")
    features = (train_f, train_y, test_f, test_y)
    shots, left_out, scarce, count = feasible_shots(train_y, shots or ())
    return dict(layers=list(train_f), n_train=len(train_y), n_test=len(test_y),
                logistic=evaluate_features(*features, C=C) if logistic else None,
                fewshot=evaluate_features(*features, shots=shots, seeds=seeds, l2_reg=l2_reg) if shots else None,
                shots_left_out=dict(shots=left_out, scarcest_class=scarce, count=count) if left_out else None)


def evaluate_features(train_f: dict[str, torch.Tensor], train_y: torch.Tensor, test_f: dict[str, torch.Tensor],
                      test_y: torch.Tensor, *, shots: Sequence[int] | None = None, seeds: Sequence[int] = (0, 1, 2),
                      C: float = 1.0, l2_reg: float = 1.0) -> dict[str, object]:
    """Per layer: logistic regression's test accuracy, or with ``shots`` the few-shot results (see
    :func:`fewshot_eval`), on features already extracted (see ``dataset_features``)."""
    if shots is None:
        return {name: logistic_probe(train_f[name], train_y, test_f[name], test_y, C=C) for name in train_f}
    return {name: fewshot_eval(train_f[name], train_y, test_f[name], test_y, shots=shots, seeds=seeds, l2_reg=l2_reg)
            for name in train_f}
