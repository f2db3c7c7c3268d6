"""On a CUDA GPU (skipped without one): what the CPU suite cannot reach. ViT-B/16 against timm's on the GPU in
float32 and under bf16 autocast, forward and gradients, through a fused attention kernel; and `train` with its GPU
defaults (bf16 autocast, torch's fused AdamW, torch.compile, pinned memory), stopped, resumed and fine-tuned at twice
the resolution from a zero head, whose first loss is log(10) to float32 precision (it was bf16's 2.297 until the
loss moved out of autocast). First run: an H200, 2026-11-26, 3 passed in 42 s."""
import os

import pytest
import timm
import torch

import vitlens
from conftest import perturb_
from test_train import CHANCE, NO_RANDOMNESS, records, tiny, weights
from vitlens.train import apply_overrides, list_checkpoints, load_config, load_state, train
from vitlens.train import loop

# VITLENS_TEST_DEVICE=cpu runs these on the CPU, to check the tests themselves where there is no GPU.
DEVICE = os.environ.get("VITLENS_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU")]
# The paper's ViT-B/16 on the GPU; ViT-Ti/16 (same code paths) when the tests themselves are checked on a CPU.
TIMM_NAME, VITLENS_NAME = ("vit_base_patch16_224", "vit_b16") if DEVICE == "cuda" else ("vit_tiny_patch16_224",
                                                                                       "vit_ti16")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture
def no_tf32():
    """Plain float32 matrix products, so float32 parity is not blurred by tf32's 10-bit mantissa."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def outputs_and_grads(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, dict]:
    model.train().zero_grad()
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    out.float().square().mean().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def test_vit_matches_timm_in_fp32_and_bf16_forward_and_backward(no_tf32):
    ref = perturb_(timm.create_model(TIMM_NAME, num_classes=10)).to(DEVICE)
    ours = vitlens.from_timm(ref).to(DEVICE)
    x = torch.randn(8, 3, 224, 224, device=DEVICE)
    exact_out, exact_grads = outputs_and_grads(ref, x, bf16=False)
    out, grads = outputs_and_grads(ours, x, bf16=False)
    torch.testing.assert_close(out, exact_out, atol=1e-4, rtol=1e-4)
    for k in exact_grads:
        torch.testing.assert_close(grads[k], exact_grads[k], atol=1e-5, rtol=1e-3, msg=k)

    # bf16 rounds differently in each kernel, so the yardstick is float32: vitlens under autocast must be as close
    # to the float32 result as timm under autocast is.
    (ref_out, ref_grads), (our_out, our_grads) = (outputs_and_grads(m, x, bf16=True) for m in (ref, ours))
    pairs = {"logits": (our_out, ref_out, exact_out)}
    for k in ("pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.weight"):
        pairs[k] = (our_grads[k], ref_grads[k], exact_grads[k])
    for k, (ours_bf16, timm_bf16, exact) in pairs.items():
        timm_err, our_err = rel_err(timm_bf16, exact), rel_err(ours_bf16, exact)
        assert timm_err < 0.1 and our_err <= 1.5 * timm_err + 1e-3, (k, our_err, timm_err)


@pytest.mark.skipif(DEVICE != "cuda", reason="which attention kernel runs is a CUDA question")
def test_attention_runs_a_fused_kernel_not_the_math_fallback():
    model = vitlens.create_model(VITLENS_NAME, num_classes=10).to(DEVICE)
    x = torch.randn(4, 3, 224, 224, device=DEVICE)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            model(x)
    ops = {e.key for e in prof.key_averages()}
    fused = {op for op in ops if op.startswith("aten::_scaled_dot_product_") and "math" not in op}
    assert fused and not any("math" in op for op in ops if "scaled_dot_product" in op), sorted(ops)


def test_pretrain_with_gpu_defaults_then_resume_and_finetune(tmp_path, monkeypatch):
    seen = {"optimizers": [], "autocast": []}
    create_optimizer, autocast = loop.create_optimizer_v2, loop._autocast

    def spy_optimizer(*args, **kwargs):
        seen["optimizers"].append(create_optimizer(*args, **kwargs))
        return seen["optimizers"][-1]

    def spy_autocast(device, amp):
        ctx = autocast(device, amp)
        seen["autocast"].append((getattr(ctx, "device", "none"), getattr(ctx, "fast_dtype", None)))
        return ctx

    monkeypatch.setattr(loop, "create_optimizer_v2", spy_optimizer)
    monkeypatch.setattr(loop, "_autocast", spy_autocast)
    # A learnable toy task (each class a fixed image plus noise) at the GPU defaults: train.amp and train.device
    # are left at auto; only compile is asked for.
    cfg = tiny("data.dataset=synthetic", "data.subset=1024", "model.img_size=32", "model.in_chans=3",
               "model.patch_size=8", "model.representation_size=null", "train.steps=120", "train.ckpt_every=60",
               "optim.lr=3e-3", "optim.weight_decay=0", "augment.label_smoothing=0", *NO_RANDOMNESS,
               f"train.compile={DEVICE == 'cuda'}", "train.threads=null", f"train.device={DEVICE}")
    run = train(apply_overrides(cfg, ["train.stop_at=60"]), tmp_path / "pre")
    assert [p.name for p in list_checkpoints(run)] == ["step_00000060"]
    state = load_state(list_checkpoints(run)[-1])
    assert len(state["rng"][0]["cuda"]) == (torch.cuda.device_count() if DEVICE == "cuda" else 0)
    train(apply_overrides(cfg, []), run, resume=True)

    losses = [r["loss"] for r in records(run) if "loss" in r]
    assert [r["step"] for r in records(run) if "loss" in r] == list(range(1, 121))
    assert sum(losses[:5]) / 5 > 0.8 * CHANCE and sum(losses[-5:]) / 5 < 0.3 * CHANCE, losses
    optimizer = seen["optimizers"][0]
    assert bool(optimizer.defaults.get("fused")) is (DEVICE == "cuda")
    assert all(p.device.type == DEVICE for g in optimizer.param_groups for p in g["params"])
    if DEVICE == "cuda":
        assert set(seen["autocast"]) == {("cuda", torch.bfloat16)}
    assert not any(k.startswith("_orig_mod.") for k in weights(run))  # compile's wrapper never reaches the file
    model = vitlens.load_model(run)  # on the CPU: the file holds plain CPU tensors
    assert next(model.parameters()).device.type == "cpu"

    ft = train(load_config("fashion_vit_ft", [
        f"model.source={run}", "model.img_size=64", "data.dataset=synthetic", "data.subset=256", "train.steps=3",
        "train.batch_size=32", "train.log_every=1", "train.eval=false", "train.ema_decay=null",
        f"train.device={DEVICE}"]), tmp_path / "ft")
    # A zero head gives zero logits even under bf16, so the first loss is the chance level to float precision.
    assert records(ft)[0]["loss"] == pytest.approx(CHANCE, abs=1e-5)
    assert vitlens.load_model(ft).img_size == (64, 64)
