"""Where and in what precision models run: the one place that turns `--precision` and `--device` into a torch dtype
and device, and that waits for a device before a timer reads it.

Every command takes the same `--precision` values with the same meaning, and refuses any other in the same
sentence: 'auto' is bf16 on a GPU that supports it (the fast path of training and of the lean Grad-CAM pass), else
fp32.
"""

from __future__ import annotations

import platform

import torch

from pipelines.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """`precision` itself when it is one of `PRECISIONS`.

    Raises:
        ConfigError: any other value, in one sentence.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision is {precision!r}; use one of {', '.join(PRECISIONS)}.")
    return precision


def supports_bf16(device: torch.device) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()


def resolved_precision(precision: str, device: torch.device) -> str:
    """'auto' made concrete for `device` (bf16 on a GPU that supports it, else fp32); other values as they are."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if supports_bf16(device) else "fp32"
    return precision


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The torch dtype `precision` means on `device`."""
    return DTYPES[resolved_precision(precision, device)]


def precision_name(dtype: torch.dtype) -> str:
    """'fp32', 'bf16' or 'fp16' for a compute dtype."""
    return next(name for name, known in DTYPES.items() if known == dtype)


def default_device(use_cpu: bool = False) -> torch.device:
    """CUDA when there is a GPU and the CPU is not asked for, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")


def pick_device(name: str | None) -> torch.device:
    """The named device, or `default_device` when none is named.

    Raises:
        ConfigError: a name torch does not know (such as 'gpu'), or a device this machine does not have.
    """
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists twenty device types; the user needs the two that matter
        raise ConfigError(f"device '{name}' is not a device torch knows; use cuda (an NVIDIA GPU) or cpu.") from None
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu: each says if it is there
    available = device.type == "cpu" or (hasattr(backend, "is_available") and backend.is_available())
    if available and device.type == "cuda" and device.index is not None:
        available = device.index < torch.cuda.device_count()
    if not available:
        raise ConfigError(f"device '{name}' is not available on this machine; use device {default_device().type}.")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or 'cpu', as reports and results tables record where they were measured."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def machine_description(device: torch.device) -> str:
    """The GPU's name, or the CPU with its processor and thread count, for benchmark headings."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timer reads finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
