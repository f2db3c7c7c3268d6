"""Capture on every timm ViT family, and analyses at a real resolution (issue 19).

1. Capture-all overhead: the B-size model of each family (random weights, 224 px, batch 8, CPU float32), a forward
   with every layer's attention captured against the plain fused forward, interleaved, min of several.
   Target: at most 1.10x.
2. Memory at 518 px: ViT-L/14 (DINOv2's layout: 1,370 tokens, 24 layers x 16 heads), one image: the extra peak
   memory of rollout + mean attention distance reduced layer by layer (`streamed_maps`) against keeping every map
   (`capture` + `attention_rollout` + `mean_attention_distance`), each in a fresh process after a plain forward
   pass, and the largest difference between the two results. Target: streamed within 1 GB, results within 1e-5.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import timm
import torch

import vitlens
from common import capture_overhead, write_result
from vitlens.analysis import attention_rollout, cls_map, mean_attention_distance, streamed_maps

FAMILIES = ["vit_base_patch16_224.augreg2_in21k_ft_in1k", "deit_base_distilled_patch16_224", "deit3_base_patch16_224",
            "vit_base_patch16_224.dino", ("vit_base_patch14_dinov2", dict(img_size=224)),
            ("vit_base_patch14_reg4_dinov2", dict(img_size=224)), "vit_base_patch16_clip_224",
            "vit_base_patch16_siglip_224", "vit_base_patch16_224.mae", "eva02_base_patch14_224",
            "vit_base_patch16_rope_reg1_gap_256", "beit_base_patch16_224"]


def bench_capture(repeats: int) -> list[dict]:
    rows = []
    for entry in FAMILIES:
        name, kw = entry if isinstance(entry, tuple) else (entry, {})
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, **kw).eval()
        t = capture_overhead(model, torch.randn(8, 3, *model.patch_embed.img_size), repeats)
        rows.append(dict(model=name, cls=type(model).__name__, tokens=vitlens.token_layout(model).num_tokens, **t))
        print(f"{name:45s} fused {t['fused_s']:.2f} s, captured {t['captured_s']:.2f} s: {t['ratio']:.3f}x")
    return rows


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker() -> None:
    """In a fresh process: baseline, then streamed, then keep-everything; prints one JSON line."""
    torch.manual_seed(0)
    model = timm.create_model("vit_large_patch14_dinov2", pretrained=False, img_size=518).eval()
    x = torch.randn(1, 3, 518, 518)
    layout = vitlens.token_layout(model)
    with torch.inference_mode():
        model(x)
    base = peak_mib()
    streamed = streamed_maps(model, x, heads=False)
    after_stream = peak_mib()
    with torch.inference_mode(), vitlens.capture(model) as rec:
        model(x)
    rollout = cls_map(attention_rollout(rec.attentions, num_prefix_tokens=layout.num_prefix_tokens), layout)
    distance = mean_attention_distance(rec.attentions, layout)
    after_keep = peak_mib()
    diff = max((streamed["rollout"] - rollout).abs().max().item(), (streamed["distance"] - distance).abs().max().item())
    print(json.dumps(dict(model="vit_large_patch14_dinov2", img_size=518, tokens=layout.num_tokens,
                          layers=len(model.blocks), heads=model.blocks[0].attn.num_heads, baseline_peak_mib=base,
                          streamed_extra_mib=after_stream - base, keep_extra_mib=after_keep - base,
                          max_abs_difference=diff)))


def bench_memory() -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-worker"], check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"ViT-L/14 at 518 px, rollout + distance: extra peak {row['streamed_extra_mib']:.0f} MiB streamed, "
          f"{row['keep_extra_mib']:.0f} MiB keeping every map; largest difference {row['max_abs_difference']:.1e}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker()
        return
    write_result("families_cpu", {
        "targets": "capture-all overhead <= 1.10x (B-size, batch 8); ViT-L/14 at 518 px streamed extra peak <= 1 GB, "
                   "results equal within 1e-5",
        "capture": bench_capture(args.repeats), "memory": bench_memory()})


if __name__ == "__main__":
    main()
