"""Every private transformers API the project uses (trainers/compat.py lists them) is still there and still means
what the project relies on: the Trainer methods `TrainerHooks` overrides keep their signatures and are still called
where the override matters, Trainer still reads the scheduler mark, and a model's attention implementation is still
read from its config. A transformers release that renames or reshapes one fails here instead of quietly resuming or
finishing with the wrong weights."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification, Trainer

from trainers.compat import TrainerHooks, mark_scheduler_created
from trainers.image_classification import ImageClassificationTrainer

from helpers.data import BEST_IS_HIGHEST_LOSS, make_medmnist_npz, tiny_run_config, write_config
from helpers.models import TINY_VIT
from helpers.project import load_script

OVERRIDDEN = ("_load_from_checkpoint", "_load_best_model", "_prepare_inputs")


def parameters(function) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults (not annotations, which are spelt differently across releases)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_overridden_private_methods_keep_their_signature(name: str) -> None:
    assert hasattr(Trainer, name), f"transformers' Trainer no longer has {name}: the override is never called"
    assert parameters(getattr(TrainerHooks, name)) == parameters(getattr(Trainer, name))
    assert getattr(ImageClassificationTrainer, name) is getattr(TrainerHooks, name)  # one home for each override


def test_best_model_reload_and_resume_go_through_the_overrides_and_restore_the_saved_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, list[dict[str, torch.Tensor]]] = {name: [] for name in OVERRIDDEN}
    for name in OVERRIDDEN:
        original = getattr(ImageClassificationTrainer, name)

        def recorded(self, *args, _original=original, _name=name, **kwargs):
            result = _original(self, *args, **kwargs)
            model = args[1] if len(args) > 1 and args[1] is not None else self.model
            # The weights the model holds right after the call (for the two reloads).
            calls[_name].append({} if _name == "_prepare_inputs" else copy_weights(model))
            return result

        monkeypatch.setattr(ImageClassificationTrainer, name, recorded)
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(
        tmp_path,
        tmp_path / "data",
        model_config=TINY_VIT,  # ViT: saved under legacy weight names that Trainer's load_state_dict does not match
        max_steps=4,
        **BEST_IS_HIGHEST_LOSS,  # checkpoint-2 is reloaded
    )
    config = str(write_config(tmp_path / "c.yaml", **values))
    main = load_script("finetune").main
    main([config])
    run_dir = Path(values["output_dir"])
    assert calls["_prepare_inputs"], "Trainer no longer calls _prepare_inputs: batches would reach the model as uint8"
    assert len(calls["_load_best_model"]) == 1, "Trainer no longer calls _load_best_model at the end"
    best = saved_weights(run_dir / "checkpoint-2")
    assert_same(calls["_load_best_model"][0], best)
    assert_same(saved_weights(run_dir), best)
    assert not all(torch.equal(best[key], value) for key, value in saved_weights(run_dir / "checkpoint-4").items())

    # Resume from checkpoint-2: Trainer loads it through the override before training the last two steps.
    calls["_load_from_checkpoint"].clear()
    main([config, "--resume_from_checkpoint", str(run_dir / "checkpoint-2"), "--load_best_model_at_end", "false"])
    assert calls["_load_from_checkpoint"], "Trainer no longer calls _load_from_checkpoint when it resumes"
    assert_same(calls["_load_from_checkpoint"][0], best)


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A saved folder's weights under the model's own parameter names (save_pretrained may write legacy ones)."""
    return copy_weights(AutoModelForImageClassification.from_pretrained(folder))


def assert_same(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == reference.keys()
    different = [key for key in reference if not torch.equal(weights[key], reference[key])]
    assert not different, f"weights differ from the saved checkpoint: {different[:3]}"


def test_trainer_still_reads_the_scheduler_mark() -> None:
    # Trainer makes a new scheduler for a later train() call only when it marked the current one as its own.
    source = inspect.getsource(Trainer)
    assert "_created_lr_scheduler" in source
    trainer = Trainer.__new__(Trainer)
    mark_scheduler_created(trainer)
    assert trainer._created_lr_scheduler is True


def test_the_attention_implementation_is_read_from_the_config_and_set_by_the_public_setter() -> None:
    from transformers import ViTConfig, ViTForImageClassification

    from explain.hooks import eager_attention

    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32)
    model = ViTForImageClassification(config)
    assert model.config._attn_implementation == "sdpa"  # what explain.hooks.eager_attention reads
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
        attentions = model(torch.zeros(1, 3, 32, 32), output_attentions=True).attentions
        assert attentions is not None and attentions[0].shape == (1, 2, 5, 5)
    assert model.config._attn_implementation == "sdpa"
