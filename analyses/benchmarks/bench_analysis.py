"""Analysis benchmarks (issue 4).

1. Capture overhead: ViT-B/16, batch 8, 224 px, forward with every layer's attention captured against the plain
   fused forward; interleaved, min of several. Target: at most 10% slower on this CPU.
2. Rollout time: attention rollout of the 12 captured layers (batch 8), and gradient rollout (forward + backward).
3. Streaming attention distance over 1,000 images (ViT-Ti/16 at 224 px, batch 32): peak resident memory of a
   fresh process after 250 and after 1,000 images must be the same (flat in the number of images).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

import vitlens
from common import capture_overhead, interleaved_min, write_result
from vitlens.analysis import attention_distance, attention_rollout, gradient_rollout

DISTANCE_BATCH = 32


def bench_capture(repeats: int) -> dict:
    model = vitlens.create_model("vit_b16").eval()
    t = capture_overhead(model, torch.randn(8, 3, 224, 224), repeats)
    row = dict(model="vit_b16", batch=8, fused_s=t["fused_s"], captured_s=t["captured_s"], overhead=t["ratio"] - 1)
    print(f"capture overhead ViT-B/16 b8: fused {t['fused_s']:.3f} s, all layers captured {t['captured_s']:.3f} s "
          f"({100 * row['overhead']:+.1f}%)")
    return row


def bench_rollout(repeats: int) -> dict:
    model = vitlens.create_model("vit_b16", num_classes=10).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.02)  # a zero head would give zero gradients
    x = torch.randn(8, 3, 224, 224)
    with torch.inference_mode(), vitlens.capture(model) as rec:
        model(x)
    attn = rec.attentions
    t = interleaved_min({"rollout": lambda: attention_rollout(attn),
                         "gradient_rollout": lambda: gradient_rollout(model, x)}, repeats=repeats)
    print(f"rollout of 12 layers, batch 8, N=197: {1000 * t['rollout']:.1f} ms; gradient rollout (forward + backward) "
          f"{t['gradient_rollout']:.2f} s")
    return dict(model="vit_b16", batch=8, rollout_ms=1000 * t["rollout"], gradient_rollout_s=t["gradient_rollout"])


def distance_worker(n_images: int) -> None:
    """Run in a fresh process: stream n_images random images through attention_distance, print peak RSS (MiB)."""
    torch.manual_seed(0)
    model = vitlens.create_model("vit_ti16").eval()

    def loader():  # images made batch by batch, so only the function's own memory can grow
        for _ in range(n_images // DISTANCE_BATCH):
            yield torch.rand(DISTANCE_BATCH, 3, 224, 224)

    t = time.perf_counter()
    res = attention_distance(model, loader(), progress=False)
    elapsed = time.perf_counter() - t
    print(res["count"], elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_distance_memory() -> dict:
    rows = []
    for n in (256, 1024):
        out = subprocess.run([sys.executable, __file__, "--distance-worker", str(n)], check=True, capture_output=True,
                             text=True).stdout.split()
        count, seconds, peak = int(out[0]), float(out[1]), float(out[2])
        rows.append(dict(images=count, seconds=seconds, images_per_s=count / seconds, peak_rss_mib=peak))
        print(f"attention distance ViT-Ti/16 over {count} images: {seconds:.1f} s ({count / seconds:.1f} img/s), "
              f"peak RSS {peak:.0f} MiB")
    growth = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1
    print(f"peak memory 1024 vs 256 images: {100 * growth:+.1f}%")
    return dict(model="vit_ti16", batch=DISTANCE_BATCH, rows=rows, peak_growth_256_to_1024=growth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--distance-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.distance_worker:
        distance_worker(args.distance_worker)
        return
    write_result("analysis_cpu", {
        "targets": "capture overhead <= 10% (ViT-B/16, batch 8); streaming distance memory flat in images",
        "capture": bench_capture(args.repeats), "rollout": bench_rollout(args.repeats),
        "distance_memory": bench_distance_memory()})


if __name__ == "__main__":
    main()
