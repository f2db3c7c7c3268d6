"""Shared by the benchmark scripts: interleaved timing (min of several) and the machine's name."""
from __future__ import annotations

import json
import os
import platform
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitlens.train import compile_model

RESULTS = Path(__file__).resolve().parent / "results"
ATTENTION_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                      "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``mode``: eager (the model as it is), compile (torch.compile's default), tuned (plus coordinate-descent
    tuning) or one of torch.compile's modes: what ``train.compile`` accepts."""
    return compile_model(model, True if mode == "compile" else mode)


def attention_backend(name: str) -> AbstractContextManager:
    """F.scaled_dot_product_attention restricted to one backend (``auto``: PyTorch's own choice)."""
    return nullcontext() if name == "auto" else sdpa_kernel(ATTENTION_BACKENDS[name])


def machine() -> str:
    """CPU model and core count, or the GPU's name when CUDA is used."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f"; GPU {torch.cuda.get_device_name()}"
    return desc


def interleaved_min(fns: dict[str, Callable[[], None]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Seconds per call for each function, run in turns so drift hits all; min of repeats.

    The order alternates (a b, b a, a b, ...): under a shared CPU the first of a pair is systematically
    luckier or unluckier, and a fixed order turns that into a bias of several percent."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    for r in range(repeats):
        for k, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def capture_overhead(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds of a forward pass with every layer's attention captured against the plain fused one (interleaved,
    min of ``repeats``), and their ratio."""
    import vitlens

    def fused():
        with torch.inference_mode():
            model(x)

    def captured():
        with torch.inference_mode(), vitlens.capture(model):
            model(x)

    t = interleaved_min({"fused": fused, "captured": captured}, repeats=repeats)
    return dict(fused_s=t["fused"], captured_s=t["captured"], ratio=t["captured"] / t["fused"])


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    # The 1-minute load average says how much else the machine was doing: above the core count, ratios are noisy.
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_1min": os.getloadavg()[0]}
    path.write_text(json.dumps({**meta, **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
