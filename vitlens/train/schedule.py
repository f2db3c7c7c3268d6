"""The learning-rate schedule (paper App. B): linear warm-up to the peak, then linear or cosine decay.

Hand-written rather than timm's ``CosineLRScheduler`` / ``PolyLRScheduler`` or torch's ``LinearLR`` and
``CosineAnnealingLR`` chained by ``SequentialLR``, because none gives these learning rates exactly. Here step ``s`` of
the warm-up takes ``(s + 1) / warmup`` of the peak, so the peak comes at step ``warmup - 1`` and is held at step
``warmup``, where the decay starts. timm's warm-up takes ``warmup_lr_init`` at step 0 (0 by default: a step without
an update) and reaches the peak only at step ``warmup``; lining its warm-up up with this one
(``warmup_t = warmup - 1``, ``warmup_lr_init = peak / warmup``) starts its decay one step early instead (4 warm-up
steps of 12, cosine: 1.0, 0.966, 0.868... from step 3 against 1.0, 1.0, 0.966... here). torch's chain follows the
same curve but computes each rate from the previous one, which drifts from the closed form by rounding (up to 1e-12
relative over 90,000 steps), and its state would not load from the checkpoints of existing runs.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .config import Decay, ScheduleConfig


def lr_factor(step: int, total: int, warmup: int, decay: Decay, min_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (from 0) as a fraction of the peak.

    Args:
        step: the step about to be taken.
        total: the run's optimizer steps.
        warmup: steps of linear warm-up: step ``s < warmup`` takes ``(s + 1) / warmup``.
        decay: ``cosine`` or ``linear`` from the peak at step ``warmup`` to ``min_ratio`` at step ``total``.
        min_ratio: the final learning rate as a fraction of the peak.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * shape


def build_scheduler(optimizer: Optimizer, schedule: ScheduleConfig, peak_lr: float, total: int) -> LambdaLR:
    """``schedule`` over ``total`` steps for an optimizer created with learning rate ``peak_lr``; step it after
    each optimizer step."""
    return LambdaLR(optimizer, lambda s: lr_factor(s, total, schedule.warmup_steps, schedule.decay,
                                                   schedule.min_lr / peak_lr))
