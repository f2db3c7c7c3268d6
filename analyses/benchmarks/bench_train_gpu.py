"""ViT-B/16 training throughput and MFU on a CUDA GPU, vitlens against timm (exits when there is no GPU).

One step: bf16 autocast forward, cross-entropy, backward, gradient clipping, fused AdamW. MFU counts
6 x 17.6 GMACs... as FLOPs: a ViT-B/16 forward is 17.6 GMACs = 35.2 GFLOPs per 224 x 224 image, and training
(forward + backward) is about 3 x that, so MFU = images/s x 6 x 17.6e9 / peak bf16 FLOP/s. Interleaved runs,
min of several. Target: MFU >= 40%.
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch

import vitlens
from bench_train import train_steps
from common import interleaved_min, write_result

FLOPS_PER_IMAGE = 6 * 17.6e9
# Dense bf16 tensor-core peaks (NVIDIA data sheets); pass --peak-tflops for other parts.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10": 125.0, "RTX 4090": 165.0}


def peak_flops(name: str, override: float | None) -> float:
    if override:
        return override * 1e12
    for key, tflops in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" is listed before "H100" so it matches first
        if key in name:
            return tflops * 1e12
    sys.exit(f"unknown peak bf16 FLOP/s for {name!r}; pass --peak-tflops")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    gpu = torch.cuda.get_device_name()
    peak = peak_flops(gpu, args.peak_tflops)
    ref = timm.create_model("vit_base_patch16_224", num_classes=1000).cuda()
    ours = vitlens.from_timm(ref).cuda()
    ref.train(), ours.train()
    cfg = dict(model=dict(img_size=224, in_chans=3),
               optim=dict(name="adamw", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), clip_grad=1.0))
    models = {"vitlens": ours, "timm": ref}
    if args.compile:
        models = {k: torch.compile(m) for k, m in models.items()}
    fns = {k: train_steps(m, cfg, args.batch, args.steps, "cuda", True) for k, m in models.items()}
    t = interleaved_min(fns, repeats=args.repeats, warmup=2 if args.compile else 1)
    rows = []
    for name, seconds in t.items():
        img_s = args.batch * args.steps / seconds
        rows.append(dict(impl=name, model="vit_b16", gpu=gpu, batch=args.batch, dtype="bf16", compile=args.compile,
                         img_s=img_s, mfu=img_s * FLOPS_PER_IMAGE / peak, peak_tflops=peak / 1e12))
        print(f"{name}: {img_s:.1f} img/s, MFU {100 * rows[-1]['mfu']:.1f}% of {peak / 1e12:.0f} TFLOP/s ({gpu})")
    write_result("train_gpu", {"target": "MFU >= 0.40; vitlens/timm >= 1.0", "ratio": t["timm"] / t["vitlens"],
                               "rows": rows})


if __name__ == "__main__":
    main()
