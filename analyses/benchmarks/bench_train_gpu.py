"""ViT-B/16 training throughput and MFU on a CUDA GPU, vitlens against timm (exits when there is no GPU).

One step: bf16 autocast forward, cross-entropy, backward, gradient clipping, fused AdamW. MFU counts
6 x 17.6 GMACs as FLOPs: a ViT-B/16 forward is 17.6 GMACs = 35.2 GFLOPs per 224 x 224 image, and training
(forward + backward) is about 3 x that, so MFU = images/s x 6 x 17.6e9 / peak bf16 FLOP/s (the data sheet's dense
peak). The script also times one large bf16 matrix product, the rate this card reaches in practice, as context.
Each run (eager or torch.compile, at a batch size) is interleaved vitlens/timm, min of several. Target: MFU >= 40%.
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch

import vitlens
from bench_train import train_steps
from common import ATTENTION_BACKENDS, attention_backend, compiled, interleaved_min, write_result

FLOPS_PER_IMAGE = 6 * 17.6e9
# The step's input and optimizer (train_steps' config): ImageNet-sized images, AdamW as in the paper's pre-training.
RECIPE = dict(model=dict(img_size=224, in_chans=3),
              optim=dict(name="adamw", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), clip_grad=1.0))
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


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """bf16 rate of one n x n x n product on random data (median of repeats): the card's practical ceiling."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", nargs="+", default=["eager:128", "compile:128"],
                        help="MODE:BATCH; MODE is eager, compile (torch.compile's default mode), tuned (plus "
                             "coordinate-descent tuning: 1-2 minutes per model) or one of torch.compile's modes, such "
                             "as max-autotune-no-cudagraphs (compiling ViT-B/16 twice takes a minute or more)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--attention", default="auto", choices=("auto", *ATTENTION_BACKENDS),
                        help="restrict F.scaled_dot_product_attention to one backend, for both models")
    parser.add_argument("--low-precision-residual", action="store_true",
                        help="vitlens's residual stream and LayerNorms in bf16 (VisionTransformer's option; timm has "
                             "no such option, so its model is unchanged)")
    parser.add_argument("--name", default="train_gpu", help="results/NAME.json, rewritten after each run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    gpu = torch.cuda.get_device_name()
    peak = peak_flops(gpu, args.peak_tflops)
    measured = matmul_tflops()
    print(f"{gpu}: bf16 8192^3 matmul {measured:.0f} TFLOP/s measured, {peak / 1e12:.0f} on the data sheet")
    rows = []
    for spec in args.runs:
        mode, batch = spec.split(":")
        batch = int(batch)
        torch._dynamo.reset()  # else a second batch size recompiles with dynamic shapes, a different program
        ref = timm.create_model("vit_base_patch16_224", num_classes=1000).cuda()
        ours = vitlens.from_timm(ref, low_precision_residual=args.low_precision_residual).cuda()
        models = {"vitlens": compiled(ours, mode), "timm": compiled(ref, mode)}
        fns = {k: train_steps(m, RECIPE, batch, args.steps, "cuda", True) for k, m in models.items()}
        with attention_backend(args.attention):
            t = interleaved_min(fns, repeats=args.repeats, warmup=1 if mode == "eager" else 2)
        for name, seconds in t.items():
            img_s = batch * args.steps / seconds
            rows.append(dict(impl=name, model="vit_b16", batch=batch, dtype="bf16", mode=mode,
                             attention=args.attention, img_s=img_s,
                             low_precision_residual=name == "vitlens" and args.low_precision_residual,
                             mfu=img_s * FLOPS_PER_IMAGE / peak, ratio_vs_timm=t["timm"] / seconds))
            print(f"{mode} b{batch} {name}: {img_s:.0f} img/s, MFU {100 * rows[-1]['mfu']:.1f}% "
                  f"(vitlens/timm {t['timm'] / t['vitlens']:.3f})")
        del models, fns, ref
        torch.cuda.empty_cache()
        # After each run, so a compile that outlasts a lent GPU's time keeps the runs before it.
        write_result(args.name, {"target": "MFU >= 0.40; vitlens/timm >= 1.0", "gpu": gpu,
                                 "peak_tflops_datasheet": peak / 1e12, "matmul_tflops_measured": measured,
                                 "flops_per_image": FLOPS_PER_IMAGE, "steps_per_call": args.steps,
                                 "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
