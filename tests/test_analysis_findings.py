"""The findings in words follow the numbers: constructed inputs whose answer is known."""
import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed

from vitlens.analysis import distance_finding, posembed_finding, probe_finding


def test_distance_finding_names_local_heads_by_layer_or_says_there_are_none():
    uniform = 20.0
    flat = torch.full((3, 4), 19.0)
    found = distance_finding(flat, uniform)
    assert found["local_heads"] == [0, 0, 0] and "no local heads" in found["text"]
    mixed = flat.clone()
    mixed[0, :2] = 5.0  # two local heads in layer 1, one in layer 2
    mixed[1, 3] = 8.0
    found = distance_finding(mixed, uniform)
    assert found["local_heads"] == [2, 1, 0] and "layers 1 (2), 2 (1)" in found["text"]
    assert found["layer_mean"][0] == (5 + 5 + 19 + 19) / 4 and "grows with depth" in found["text"]


def cosine(table: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    unit = F.normalize(table, dim=-1)
    return (unit @ unit.T).reshape(gh, gw, gh, gw)


def test_posembed_finding_tells_a_smooth_grid_from_a_mirrored_one():
    gh, gw = 5, 7  # not square: rows and columns differ
    smooth = build_sincos2d_pos_embed((gh, gw), dim=64, temperature=20.0)  # nearby patches alike by construction
    found = posembed_finding(cosine(smooth, gh, gw))
    assert found["neighbour_share"] == 1.0 and found["mirror_share"] < 0.25 and "mirror" not in found["text"]
    g = torch.Generator().manual_seed(0)
    half = torch.randn(gh, gw // 2 + 1, 32, generator=g)  # columns 0..3 random; 4..6 copy 2..0, a little noisy
    mirrored = torch.cat([half, half[:, :-1].flip(1)], dim=1) + 0.01 * torch.randn(gh, gw, 32, generator=g)
    found = posembed_finding(cosine(mirrored.reshape(gh * gw, 32), gh, gw))
    assert found["mirror_share"] == 1.0 and "mirror position (r, 7 - 1 - c)" in found["text"]


def test_probe_finding_names_the_best_layer():
    layers = ["block 1", "block 2", "pre_logits"]
    logistic = {"block 1": 0.6, "block 2": 0.9, "pre_logits": 0.8}
    fewshot = {n: {1: {"mean": v - 0.1}, 5: {"mean": v}} for n, v in (("block 1", 0.7), ("block 2", 0.5),
                                                                       ("pre_logits", 0.6))}
    found = probe_finding(layers, logistic, fewshot)
    assert found["best_logistic"] == "block 2" and found["best_fewshot"] == {5: "block 1"}
    assert "peaks at block 2 (0.900" in found["text"] and "5-shot ridge peaks at block 1" in found["text"]
