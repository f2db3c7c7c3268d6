"""Where a vitlens ViT training step spends its time, by kind of kernel: matrix products, attention, normalisation,
other element-wise and fused (Triton) work, the optimizer, copies. bench_train_gpu.py measures MFU; this says what
keeps it under the target, and whether another attention backend (--attention cudnn, say) changes that.

On CUDA it groups the GPU kernels' self time; with --device cpu (for checking the script where there is no GPU) it
groups the ATen operators' CPU self time instead. The step is bench_train.py's: bf16 autocast forward,
cross-entropy, backward, gradient clipping, AdamW (fused on CUDA), with bench_train_gpu.py's RECIPE.
"""
from __future__ import annotations

import argparse
import re
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import vitlens
from bench_train import train_steps
from bench_train_gpu import RECIPE
from common import ATTENTION_BACKENDS, attention_backend, compiled, write_result

# First match wins, so the specific kinds come before the catch-alls (a Triton kernel fusing a layer norm is "norm").
KINDS = [
    ("attention", r"flash|fmha|attention|sdpa|scaled_dot_product"),
    ("matmul", r"gemm|nvjet|xmma|cutlass|sm90_|cublas|triton_tem|convolution|conv2d"
               r"|aten::(addmm|mm|bmm|linear|matmul)\b"),
    ("optimizer", r"adam|multi_tensor|foreach|clip_grad"),
    ("norm", r"layer_norm|layernorm|native_layer_norm|welford|per_fused.*(var_mean|rsqrt)"),
    ("copy", r"memcpy|memset|copy_|_to_copy|cast|cat_"),
    ("elementwise", r"triton_|elementwise|vectorized|reduce|gelu|add|mul|softmax|nll|log_softmax|dropout|where"),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, low)), "other")


def profiled(step: Callable[[], None], steps: int,
             cuda: bool) -> tuple[list[tuple[str, str, float]], dict[str, float]]:
    """Run ``step`` (``steps`` optimizer steps) under the profiler. Returns (name, kind, ms per step) of each GPU
    kernel on CUDA, or on CPU of each ATen operator (their self times do not overlap), most expensive first; and the
    ms per step of each kind, largest first."""
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    kernels = sorted(((e.key, kind_of(e.key), (e.self_device_time_total if cuda else e.self_cpu_time_total)
                      / steps / 1e3) for e in prof.key_averages()
                      if (e.device_type.name == "CUDA" if cuda else e.key.startswith("aten::"))),
                     key=lambda k: -k[2])
    kernels = [k for k in kernels if k[2] > 0]
    kinds: dict[str, float] = {}
    for _, kind, ms in kernels:
        kinds[kind] = kinds.get(kind, 0.0) + ms
    return kernels, dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--model", default=None, help="a vitlens architecture; default vit_b16 (cuda), vit_ti16 (cpu)")
    parser.add_argument("--batch", type=int, default=None, help="default 128 (cuda), 8 (cpu)")
    parser.add_argument("--mode", default="eager", help="eager, compile, or a torch.compile mode")
    parser.add_argument("--attention", default="auto", choices=("auto", *ATTENTION_BACKENDS),
                        help="restrict F.scaled_dot_product_attention to one backend (auto: PyTorch's choice)")
    parser.add_argument("--steps", type=int, default=3, help="profiled optimizer steps (after two warm-up calls)")
    parser.add_argument("--top", type=int, default=15, help="kernels listed by name")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA GPU: nothing to profile (use --device cpu to check the script)")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    name, batch = args.model or ("vit_b16" if cuda else "vit_ti16"), args.batch or (128 if cuda else 8)
    model = compiled(vitlens.create_model(name, num_classes=1000).to(args.device), args.mode)
    step = train_steps(model, RECIPE, batch, args.steps, args.device, True)
    with attention_backend(args.attention):
        for _ in range(2):  # warm-up: compilation, cuBLAS handles, allocator
            step()
        if cuda:
            torch.cuda.synchronize()
        kernels, kinds = profiled(step, args.steps, cuda)
    per_step_ms = sum(kinds.values())
    title = f"{name} {args.device} b{batch} {args.mode}, attention {args.attention}"
    print(f"{title}: {per_step_ms:.1f} ms of {'GPU kernels' if cuda else 'ATen operators'} per step")
    rows = [dict(kind=kind, ms_per_step=ms, share=ms / per_step_ms) for kind, ms in kinds.items()]
    for row in rows:
        print(f"  {row['kind']:<12} {row['ms_per_step']:8.2f} ms  {100 * row['share']:5.1f} %")
    top = kernels[:args.top]
    print("top kernels:")
    for key, kind, ms in top:
        print(f"  {ms:8.2f} ms  {kind:<11} {key[:110]}")
    tag = f"profile_train_{args.device}_{args.mode}_{args.attention}".replace("-", "_")
    write_result(tag, {"model": name, "batch": batch, "mode": args.mode, "attention": args.attention,
                       "ms_per_step": per_step_ms, "kinds": rows,
                       "top": [dict(name=key, kind=kind, ms_per_step=ms) for key, kind, ms in top]})


if __name__ == "__main__":
    main()
