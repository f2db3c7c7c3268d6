"""Training throughput (images/s) of vitlens against timm's VisionTransformer on CPU, for the demo ViT.

Same architecture (vitlens is converted from the timm model, so the weights match too), same optimizer (timm's
AdamW with the demo's settings), same step: forward, cross-entropy, backward, gradient clipping, update. Runs are
interleaved (vitlens, timm, timm copy, then the reverse order, ...) and each number is the min of several. Target:
vitlens/timm >= 1.0. The control, timm against a second copy of itself with the same weights, shows how far from 1
a ratio can be by the machine's noise alone.
The GPU counterpart (ViT-B/16, bf16, MFU) is bench_train_gpu.py.
"""
from __future__ import annotations

import argparse

import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.optim import create_optimizer_v2
from torch import nn

import vitlens
from common import interleaved_min, write_result
from vitlens.train import load_config


def train_steps(model: nn.Module, cfg: dict, batch: int, steps: int, device: str, amp: bool):
    """A closure running ``steps`` optimizer steps of the demo recipe on a fixed random batch."""
    optim = cfg["optim"]
    optimizer = create_optimizer_v2(model, opt=optim["name"], lr=optim["lr"], weight_decay=optim["weight_decay"],
                                    betas=tuple(optim["betas"]), fused=device == "cuda")
    size = cfg["model"]["img_size"]
    x = torch.randn(batch, cfg["model"]["in_chans"], size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    model.train()

    def run() -> None:
        for _ in range(steps):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), optim["clip_grad"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return run


def timm_twin(model_cfg: dict) -> TimmViT:
    """timm's VisionTransformer with the fields of a vitlens ``model`` config section."""
    return TimmViT(img_size=model_cfg["img_size"], patch_size=model_cfg["patch_size"], in_chans=model_cfg["in_chans"],
                   num_classes=10, embed_dim=model_cfg["embed_dim"], depth=model_cfg["depth"],
                   num_heads=model_cfg["num_heads"], mlp_ratio=model_cfg["mlp_dim"] / model_cfg["embed_dim"],
                   global_pool="token" if model_cfg.get("pool", "token") == "token" else "avg",
                   class_token=model_cfg.get("pool", "token") == "token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="fashion_vit", help="the vitlens config whose model and optimizer to use")
    parser.add_argument("--batch", type=int, help="default: the config's batch size")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config).to_dict()  # the YAML shape: this script reads sections as mappings
    batch = args.batch or cfg["train"]["batch_size"]
    ref = timm_twin(cfg["model"])
    ours = vitlens.from_timm(ref)
    copy = timm_twin(cfg["model"])
    copy.load_state_dict(ref.state_dict())
    t = interleaved_min({name: train_steps(m, cfg, batch, args.steps, "cpu", False)
                         for name, m in (("vitlens", ours), ("timm", ref), ("timm copy", copy))}, repeats=args.repeats)
    images = batch * args.steps
    row = dict(model=args.config, device="cpu", batch=batch, dtype="fp32", vitlens_img_s=images / t["vitlens"],
               timm_img_s=images / t["timm"], ratio=t["timm"] / t["vitlens"], control_ratio=t["timm"] / t["timm copy"])
    print(f"{args.config} cpu b{batch}: vitlens {row['vitlens_img_s']:.1f} img/s, timm {row['timm_img_s']:.1f} "
          f"img/s, vitlens/timm {row['ratio']:.3f} (control: timm copy/timm {row['control_ratio']:.3f})")
    write_result("train_cpu", {"target": "vitlens/timm >= 1.0", "optimizer": cfg["optim"], "rows": [row]})


if __name__ == "__main__":
    main()
