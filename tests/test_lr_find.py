"""The LR range test: the smoothing and the suggestion rule by hand, a sweep on a tiny model through the Trainer that
leaves its weights and optimizer as they were, the plot, and the script's copy of the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainerCallback

from pipelines import ConfigError, DataArguments, load_image_dataset
from pipelines.config import parse_config
from pipelines.models import build_classifier
from trainers.arguments import ModelArguments, OneCycleTrainingArguments
from trainers.guards import NonFiniteGuard
from trainers.image_classification import ImageClassificationTrainer, build_trainer
from trainers.lr_find import (
    LRFindArguments,
    lr_range_test,
    recipe_with_rate,
    save_sweep,
    smooth,
    suggest_learning_rate,
)

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET
from helpers.project import load_script


def test_smoothing_is_a_bias_corrected_moving_average() -> None:
    assert smooth([2.0, 2.0, 2.0], 0.1) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards zero at the start
    # weight 0.5: averages 0.5 * 0 = 0, then 0.5 * 1 + 0.5 * 0 = 0.5, corrected by 1 - 0.5 and 1 - 0.25.
    assert smooth([0.0, 1.0], 0.5) == pytest.approx([0.0, 0.5 / 0.75])


def test_the_suggestion_is_a_tenth_of_the_rate_at_the_minimum_and_inside_the_range() -> None:
    rates = list(np.logspace(-6, 1, 15))
    falling_then_rising = [5.0 - index if index <= 10 else 5.0 + 3 * (index - 10) for index in range(15)]
    assert suggest_learning_rate(rates, falling_then_rising) == pytest.approx(rates[10] / 10)
    rising = [1.0 + index for index in range(15)]  # the minimum is the first point: a tenth would be outside
    assert suggest_learning_rate(rates, rising) == rates[0]
    with_nan = [*falling_then_rising[:12], float("nan"), float("-inf"), -10.0]  # only finite values count
    assert suggest_learning_rate(rates, with_nan) == pytest.approx(rates[14] / 10)


class WeightsAtTheEnd(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs) -> None:
        self.weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def tiny_trainer(tmp_path: Path, **overrides: object) -> ImageClassificationTrainer:
    make_medmnist_npz(tmp_path / "breastmnist.npz", counts=(48, 8, 8))
    data_args = DataArguments(dataset_name="breastmnist", data_dir=str(tmp_path), verify_md5=False)
    data = load_image_dataset(data_args)
    torch.manual_seed(0)
    model, processor = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    values = {
        "output_dir": str(tmp_path / "run"),
        "use_cpu": True,
        "report_to": "none",
        "per_device_train_batch_size": 8,
        "disable_tqdm": True,
        "lr_scheduler_type": "one_cycle",
        "save_strategy": "epoch",
        "eval_strategy": "epoch",
        "load_best_model_at_end": True,
        **overrides,
    }
    return build_trainer(
        ImageClassificationTrainer, model, processor, OneCycleTrainingArguments(**values), data, data_args
    )


def test_a_sweep_trains_through_the_trainer_then_leaves_weights_and_optimizer_as_they_were(tmp_path: Path) -> None:
    trainer = tiny_trainer(tmp_path)
    before = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    args, state = trainer.args, trainer.state
    at_the_end = WeightsAtTheEnd()
    trainer.add_callback(at_the_end)
    lr_args = LRFindArguments(start=1e-4, end=1.0, steps=12)

    sweep = lr_range_test(trainer, lr_args)

    assert any(not torch.equal(at_the_end.weights[name], before[name]) for name in before)  # the sweep trained
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # and was undone, batch-norm statistics included
    assert trainer.optimizer is None and trainer.lr_scheduler is None  # a later train() builds its own
    assert trainer.args is args and trainer.state is state and trainer.state.global_step == 0
    assert sum(isinstance(callback, NonFiniteGuard) for callback in trainer.callback_handler.callbacks) == 1
    steps = len(sweep.losses)
    assert 2 <= steps <= 12 and len(sweep.learning_rates) == len(sweep.smoothed) == steps
    expected_rates = [1e-4 * (1.0 / 1e-4) ** (index / 11) for index in range(steps)]
    assert sweep.learning_rates == pytest.approx(expected_rates, rel=1e-9)  # exponential, one rate per step
    assert all(np.isfinite(sweep.losses))
    assert lr_args.start <= sweep.suggestion <= lr_args.end
    assert sweep.suggestion == pytest.approx(sweep.learning_rates[int(np.argmin(sweep.smoothed))] / 10) or (
        sweep.suggestion == lr_args.start
    )

    written = save_sweep(sweep, lr_args, trainer.args, tmp_path / "unused.yaml")
    with Image.open(written["plot"]) as plot:
        assert plot.format == "PNG" and plot.width > 400 and plot.height > 300
    record = json.loads(Path(written["sweep"]).read_text())
    assert record["suggestion"] == sweep.suggestion and record["losses"] == sweep.losses
    assert Path(written["plot"]) == tmp_path / "run" / "lr_find.png" and "config" not in written


def test_a_sweep_stops_where_the_loss_diverges_and_still_restores_the_weights(tmp_path: Path) -> None:
    trainer = tiny_trainer(tmp_path, max_grad_norm=0.0)  # no clipping: huge rates blow the weights up
    before = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    sweep = lr_range_test(trainer, LRFindArguments(start=1e-3, end=1e6, steps=30))
    assert sweep.diverged and len(sweep.losses) < 30
    assert 1e-3 <= sweep.suggestion <= 1e6
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


RECIPE = """# a recipe
learning_rate: 1.0e-3  # the base rate
lr_scheduler_type: one_cycle
one_cycle_max_lr: 0.1   # peak, from lr_find
"""


def test_the_recipe_copy_changes_only_the_rate_line() -> None:
    written = recipe_with_rate(RECIPE, "one_cycle_max_lr", 0.0123456)
    assert written == RECIPE.replace("one_cycle_max_lr: 0.1   #", "one_cycle_max_lr: 1.23e-02   #")
    appended = recipe_with_rate("seed: 1\n", "learning_rate", 3e-4)
    assert appended == "seed: 1\nlearning_rate: 3.00e-04  # suggested by scripts/lr_find.py\n"


def test_the_script_prints_the_suggestion_and_writes_the_plot_and_the_recipe_copy(tmp_path: Path, capsys) -> None:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=(48, 8, 8))
    values = tiny_run_config(tmp_path, tmp_path / "data", lr_scheduler_type="one_cycle", one_cycle_max_lr=0.1)
    values.pop("max_steps")
    recipe = write_config(tmp_path / "recipe.yaml", **values)
    recipe.write_text("# my recipe\n" + recipe.read_text())
    copy = tmp_path / "suggested.yaml"

    sweep = load_script("lr_find").main(
        [str(recipe), "--start", "1e-4", "--end", "1", "--steps", "8", "--write_config", str(copy)]
    )

    printed = capsys.readouterr().out
    assert f"suggested one_cycle_max_lr: {sweep.suggestion:.2e}" in printed
    assert "a tenth of the learning rate at the smoothed loss's minimum" in printed
    assert (tmp_path / "run" / "lr_find.png").is_file() and (tmp_path / "run" / "lr_find.json").is_file()
    text = copy.read_text()
    assert text.startswith("# my recipe\n")
    assert text.replace(f"one_cycle_max_lr: {sweep.suggestion:.2e}", "one_cycle_max_lr: 0.1") == recipe.read_text()
    *_, training_args = parse_config(
        (DataArguments, ModelArguments, LRFindArguments, OneCycleTrainingArguments), [str(copy)]
    )
    assert training_args.one_cycle_max_lr == float(f"{sweep.suggestion:.2e}")  # a number, not YAML 1.1 text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"start": 1.0, "end": 0.1}, "start is 1.0 and end 0.1; give 0 < start < end"),
        ({"steps": 2}, "steps is 2; the sweep needs at least 3 steps"),
        ({"smoothing": 0.0}, "smoothing is 0.0"),
    ],
)
def test_bad_sweep_settings_are_one_sentence(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LRFindArguments(**values)
