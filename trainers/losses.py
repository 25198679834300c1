"""The label loss shared by fine-tuning and distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, multi_label: bool = False, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy (single-label) or binary cross-entropy with logits (multi-label).

    Args:
        logits: (B, L).
        labels: int64 (B,) class indices, or float (B, L) multi-hot for multi-label.
        multi_label: Treat labels as independent.
        label_smoothing: Single-label: `F.cross_entropy`'s smoothing. Multi-label: targets move towards 0.5
            by this amount (0 -> eps/2, 1 -> 1 - eps/2).

    Returns:
        A scalar loss in float32.
    """
    logits = logits.float()
    if multi_label:
        targets = labels.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
