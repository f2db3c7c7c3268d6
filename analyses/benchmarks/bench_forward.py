"""Forward throughput of vitlens against timm's VisionTransformer with the same weights.

CPU: ViT-S/16 and ViT-B/16, batch 1 and 8, fp32 and bf16 autocast. GPU (when present): ViT-B/16 bf16 at
batch 256. Runs are interleaved (vitlens, timm, timm copy, then the reverse order, ...) and each number is the min
of several. The control is timm against a second copy of itself with the same weights: its ratio differs from 1 only
by the machine's noise, so it says how far from 1 the vitlens/timm ratio can be by chance.
"""
from __future__ import annotations

import argparse

import timm
import torch

import vitlens
from common import interleaved_min, write_result

CONTROL = "control_ratio: timm against a second copy of itself; its distance from 1 is the noise of the machine"
MODELS = {"vit_s16": "vit_small_patch16_224", "vit_b16": "vit_base_patch16_224"}


def bench(device: str, name: str, batch: int, dtype: torch.dtype | None, repeats: int) -> dict:
    ref = timm.create_model(MODELS[name]).eval().to(device)
    ours = vitlens.from_timm(ref).eval().to(device)
    copy = timm.create_model(MODELS[name]).eval().to(device)
    copy.load_state_dict(ref.state_dict())
    x = torch.randn(batch, 3, 224, 224, device=device)

    def run(model):
        def fn():
            with torch.inference_mode(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                model(x)
        return fn

    t = interleaved_min({"vitlens": run(ours), "timm": run(ref), "timm copy": run(copy)}, repeats=repeats)
    row = dict(model=name, device=device, batch=batch, dtype="bf16" if dtype else "fp32",
               vitlens_img_s=batch / t["vitlens"], timm_img_s=batch / t["timm"], ratio=t["timm"] / t["vitlens"],
               control_ratio=t["timm"] / t["timm copy"])
    print(f"{name} {device} b{batch} {row['dtype']}: vitlens {row['vitlens_img_s']:.1f} img/s, "
          f"timm {row['timm_img_s']:.1f} img/s, vitlens/timm {row['ratio']:.3f} "
          f"(control: timm copy/timm {row['control_ratio']:.3f})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="all: the CPU rows, then the GPU row when there is a GPU")
    args = parser.parse_args()
    if args.device in ("all", "cpu"):
        rows = [bench("cpu", name, batch, dtype, args.repeats)
                for name in MODELS for batch in (1, 8) for dtype in (None, torch.bfloat16)]
        write_result("forward_cpu", {"target": "vitlens/timm >= 1.0", "control": CONTROL, "rows": rows})
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        rows = [bench("cuda", "vit_b16", 256, torch.bfloat16, max(args.repeats, 10))]
        write_result("forward_gpu", {"target": "vitlens/timm >= 1.0", "control": CONTROL, "rows": rows})


if __name__ == "__main__":
    main()
