"""Which class each map explains: the predicted one, one given per image, or every label."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pipelines.errors import DataError

# None: the predicted class (the top-scoring label of a multi-label model); "all": every label, one map each;
# an int: that class for every image; a sequence or tensor (B,) or (B, K): a class (or K classes) per image.
TargetSpec = None | int | str | Sequence[int] | torch.Tensor


def check_targets(targets: TargetSpec, num_labels: int, batch: int) -> None:
    """Refuse a class index the model does not have, or a per-image list of the wrong length.

    Raises:
        DataError: with one sentence saying which index and the valid range.
    """
    if targets is None:
        return
    if isinstance(targets, str):
        if targets != "all":
            raise DataError(f"targets is '{targets}'; give None (predicted class), 'all', or class indices.")
        return
    values = torch.as_tensor(targets)
    if values.is_floating_point():
        raise DataError("Class indices must be integers.")
    if values.ndim > 0 and values.shape[0] != batch:
        raise DataError(f"{values.shape[0]} target classes were given for {batch} images; give one per image.")
    bad = values[(values < 0) | (values >= num_labels)]
    if bad.numel():
        raise DataError(
            f"Class index {int(bad.flatten()[0])} is out of range: the model has {num_labels} classes (0-{num_labels - 1})."
        )


def resolve_targets(logits: torch.Tensor, targets: TargetSpec) -> torch.Tensor:
    """The class indices to explain for each image.

    Args:
        logits: (B, L).
        targets: See `TargetSpec`.

    Returns:
        int64 (B, K): K = 1, or L for ``"all"``, or K for a (B, K) tensor.
    """
    batch, num_labels = logits.shape
    check_targets(targets, num_labels, batch)
    if targets is None:
        return logits.argmax(dim=1, keepdim=True)
    if isinstance(targets, str):  # "all"
        return torch.arange(num_labels, device=logits.device).expand(batch, num_labels)
    values = torch.as_tensor(targets, device=logits.device, dtype=torch.long)
    if values.ndim == 0:
        return values.expand(batch, 1)
    return values[:, None] if values.ndim == 1 else values


def target_scores(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The model's probability for each target: softmax over classes, or sigmoid per label for multi-label models.

    Args:
        logits: (B, L).
        targets: int64 (B, K).

    Returns:
        float32 (B, K).
    """
    logits = logits.detach().float()
    probabilities = logits.sigmoid() if multi_label else logits.softmax(dim=1)
    return probabilities.gather(1, targets)


def split_targets(targets: TargetSpec, start: int, stop: int) -> TargetSpec:
    """The part of a per-image target list that belongs to images ``start:stop``."""
    if targets is None or isinstance(targets, (int, str)):
        return targets
    values = torch.as_tensor(targets)
    return values if values.ndim == 0 else values[start:stop]
