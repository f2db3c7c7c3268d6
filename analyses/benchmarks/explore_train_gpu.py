"""Which change lifts the compiled ViT-B/16 bf16 training step's MFU: a search, kept so that it can be rerun.

Its first run (H200, results/explore_train_gpu.log) chose VisionTransformer's ``low_precision_residual`` and
``train.compile=tuned``; bench_train_gpu.py measures that choice against timm. (That run applied the bf16 stream
by a forward hook on pos_drop and swapped LayerNorms, the same operations the option now runs.) Each variant is
compiled on its own (dynamo reset between), timed alone (min of several calls), then its GPU time is split by kind of
kernel (profile_train_gpu.KINDS). timm's compiled model, timed first, is the reference.
"""
from __future__ import annotations

import argparse
import time

import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torch import nn

import vitlens
from bench_train import train_steps
from bench_train_gpu import FLOPS_PER_IMAGE, RECIPE, peak_flops
from common import attention_backend, compiled, interleaved_min
from profile_train_gpu import profiled
from vitlens.models.block import LayerNorm
from vitlens.models.vit import VisionTransformer


def fast_norm_only(model: VisionTransformer) -> VisionTransformer:
    """LayerNorms in bf16 (timm's fast norm) while the residual stream stays float32."""
    for m in model.modules():
        if isinstance(m, LayerNorm):
            m.low_precision = True
    return model


def compiled_optimizer_steps(model: nn.Module, batch: int, steps: int):
    """train_steps with foreach AdamW and clipping compiled into one graph (PyTorch's compiled-optimizer recipe)."""
    optim = RECIPE["optim"]
    opt = create_optimizer_v2(model, opt="adamw", lr=optim["lr"], weight_decay=optim["weight_decay"],
                              betas=tuple(optim["betas"]), foreach=True)
    params = [p for p in model.parameters() if p.requires_grad]

    @torch.compile(fullgraph=False)
    def update() -> None:
        torch.nn.utils.clip_grad_norm_(params, optim["clip_grad"], foreach=True)
        opt.step()

    x = torch.randn(batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    model.train()

    def run() -> None:
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
            F.cross_entropy(out.float(), y).backward()
            update()
            opt.zero_grad(set_to_none=True)
    return run


# Each: the vitlens model's options (or timm's model), the train.compile setting, the attention backend, the step.
VARIANTS = {
    "base": {},
    "cdt": dict(compile="tuned"),
    "fast_norm": dict(model=fast_norm_only),
    "bf16_stream": dict(options=dict(low_precision_residual=True)),
    "bf16_stream+cdt": dict(options=dict(low_precision_residual=True), compile="tuned"),
    "attn_flash": dict(attention="flash"),
    "opt_compiled": dict(steps_fn=compiled_optimizer_steps),
    "timm": dict(timm=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="*", help=f"of: {', '.join(VARIANTS)}",
                        default=["timm", "base", "bf16_stream", "attn_flash", "cdt", "bf16_stream+cdt", "opt_compiled",
                                 "fast_norm"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to explore")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = peak_flops(torch.cuda.get_device_name(), None)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "timm", timm.__version__, flush=True)
    for name in args.variants:
        spec = VARIANTS[name]
        t0 = time.perf_counter()
        torch._dynamo.reset()
        try:
            ref = timm.create_model("vit_base_patch16_224", num_classes=1000).cuda()
            model = ref if spec.get("timm") else spec.get("model", lambda m: m)(
                vitlens.from_timm(ref, **spec.get("options", {})).cuda())
            model = compiled(model, spec.get("compile", "compile"))
            make = spec.get("steps_fn") or (lambda m, b, s: train_steps(m, RECIPE, b, s, "cuda", True))
            with attention_backend(spec.get("attention", "auto")):
                fn = make(model, args.batch, args.steps)
                seconds = interleaved_min({name: fn}, args.repeats, warmup=2)[name]
                img_s = args.batch * args.steps / seconds
                print(f"{name:>16}: {img_s:7.0f} img/s  MFU {100 * img_s * FLOPS_PER_IMAGE / peak:5.1f} %  "
                      f"{1e3 * seconds / args.steps:6.1f} ms/step  ({time.perf_counter() - t0:.0f} s incl. compile)",
                      flush=True)
                if not args.no_profile:
                    kernels, kinds = profiled(fn, args.steps, cuda=True)
                    print(f"    kernels {sum(kinds.values()):.1f} ms/step: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in kinds.items()))
                    for key, kind, ms in kernels[:args.top]:
                        print(f"      {ms:6.2f} ms {kind:<11} {key[:120]}")
        except Exception as exc:  # an exploration: report and go on to the next variant
            print(f"{name:>16}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        finally:
            model = ref = fn = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
