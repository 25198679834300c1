"""The command line: every shipped YAML validates, overrides win, unknown keys are named, every script reads its
options the same way and refuses a bad precision in the same sentence."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

import explain.cli
from pipelines import ConfigError, DataArguments
from pipelines.config import field_types, parse_config, parse_flags, read_flags
from pipelines.runtime import PRECISIONS, compute_dtype, precision_name
from trainers.arguments import ModelArguments, OneCycleTrainingArguments, apply_precision, launch_command
from trainers.report.arguments import ReportArguments

from helpers.data import write_config
from helpers.project import ROOT, load_script

DATACLASSES = (DataArguments, ModelArguments, OneCycleTrainingArguments)  # as scripts/finetune.py parses


def is_distillation_config(path: Path) -> bool:
    """A recipe for scripts/distill.py: it names a teacher."""
    return "teacher_model_name_or_path" in yaml.safe_load(path.read_text())


FINETUNE_CONFIGS = sorted(path for path in (ROOT / "configs").glob("*.yaml") if not is_distillation_config(path))


def test_argument_names_do_not_collide() -> None:
    names = [set(field_types((dataclass,))) for dataclass in DATACLASSES]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])


@pytest.mark.parametrize("path", FINETUNE_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path: Path) -> None:
    data_args, model_args, training_args = parse_config(DATACLASSES, [str(path)])
    assert training_args.do_train
    assert training_args.output_dir.startswith("runs/")
    assert (model_args.model_name_or_path is None) != (model_args.model_config is None)
    assert isinstance(training_args.learning_rate, float) and training_args.learning_rate > 0
    if data_args.dataset_source == "medmnist":
        assert data_args.dataset_name.endswith("mnist")


def test_the_expected_recipes_are_shipped() -> None:
    names = {path.name for path in FINETUNE_CONFIGS}
    assert {
        "quickstart.yaml",
        "vit_base_pathmnist.yaml",
        "deit_tiny_pathmnist.yaml",
        "resnet18_pathmnist.yaml",
        "vit_base_cifar10.yaml",
        "plants_folder.yaml",
        "resnet18_cifar10_onecycle.yaml",
        "vit_quickstart.yaml",
    } <= names


def test_plants_config_reads_label_names_in_order() -> None:
    data_args, _, _ = parse_config(DATACLASSES, [str(ROOT / "configs" / "plants_folder.yaml")])
    assert data_args.dataset_source == "folder" and data_args.class_names == ["Rudo", "Baya", "Greg", "Yuki"]


def test_command_line_overrides_win_and_are_typed(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        dataset_name="breastmnist",
        model_config={"model_type": "resnet"},
        output_dir="x",
        learning_rate="2e-4",
        num_train_epochs=5,
    )
    _, model_args, training_args = parse_config(
        DATACLASSES,
        [str(path), "--num_train_epochs", "2", "--learning_rate=1e-3", "--disable_tqdm", "--precision", "fp32"],
    )
    assert training_args.disable_tqdm is True
    assert training_args.num_train_epochs == 2
    data_args, _, _ = parse_config(DATACLASSES, [str(path), "--no_train_augmentation", "--no_horizontal_flip=false"])
    assert data_args.train_augmentation is False and data_args.horizontal_flip is True  # as --help lists them
    assert training_args.learning_rate == pytest.approx(1e-3)
    assert model_args.precision == "fp32"
    _, _, dashed = parse_config(DATACLASSES, [str(path), "--num-train-epochs", "3", "--no-disable-tqdm"])
    assert dashed.num_train_epochs == 3 and dashed.disable_tqdm is False  # the dashed spellings --help also lists


def test_yaml_exponent_strings_become_floats(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        dataset_name="breastmnist",
        model_config={"model_type": "resnet"},
        output_dir="x",
        learning_rate="2e-4",
    )
    assert parse_config(DATACLASSES, [str(path)])[2].learning_rate == pytest.approx(2e-4)


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        dataset_name="breastmnist",
        model_config={"model_type": "resnet"},
        output_dir="x",
        learning_rte=0.1,
    )
    with pytest.raises(ConfigError, match="Unknown config key 'learning_rte'.*did you mean 'learning_rate'"):
        parse_config(DATACLASSES, [str(path)])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dataset_source": "ftp", "dataset_name": "x"}, "dataset_source is 'ftp'"),
        ({"dataset_name": "breastmnist", "medmnist_size": 32}, "medmnist_size is 32"),
        ({"dataset_name": "breastmnist", "model_name_or_path": "a/b"}, "exactly one of model_name_or_path"),
        ({"dataset_name": "breastmnist", "num_train_epochs": "many"}, "num_train_epochs is 'many'"),
        ({"dataset_source": "folder"}, "needs data_dir"),
        ({"dataset_name": "breastmnist", "max_train_samples": 0}, "max_train_samples is 0; give at least 1"),
    ],
)
def test_invalid_values_are_one_sentence(tmp_path: Path, values: dict, message: str) -> None:
    values = {"model_config": {"model_type": "resnet"}, "output_dir": "x", **values}
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(DATACLASSES, [str(write_config(tmp_path / "c.yaml", **values))])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--class_names", "[no, yes]"], r"class_names holds \[False, True\], which YAML read from yes/no.*quotes"),
        (["--max_steps", "2.5"], "max_steps is 2.5, which is not an integer"),
        (["--crop_scale", "0.5"], r"crop_scale is \[0.5\]; give \[low, high\]"),
        (["--eval_strategy", "no", "epoch"], "--eval_strategy takes one value, not 2"),
        (["--model_config", "resnet"], "model_config is 'resnet', not a mapping"),
        (["--num_train_epochs", "[1]"], r"num_train_epochs is \[1\], which is not a number"),
        (["--disable_tqdm", "maybe"], "disable_tqdm is 'maybe'; use true or false"),
    ],
)
def test_values_of_the_wrong_kind_are_refused_by_name(tmp_path: Path, override: list[str], message: str) -> None:
    path = write_config(tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"})
    with pytest.raises(ConfigError, match=message):
        parse_config(DATACLASSES, [str(path), "--output_dir", "x", *override])


def test_a_file_value_of_the_wrong_kind_is_refused_by_name(tmp_path: Path) -> None:
    # A string given as class_names must not become one class per letter.
    path = write_config(
        tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"}, class_names="catdog"
    )
    with pytest.raises(ConfigError, match="class_names is 'catdog', not a list"):
        parse_config(DATACLASSES, [str(path), "--output_dir", "x"])


def test_text_fields_keep_the_command_line_text_as_typed(tmp_path: Path) -> None:
    # Read as YAML, `no` was false ("False is not a valid IntervalStrategy") and 1e5 or 0123 were numbers.
    path = write_config(tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"})
    _, _, args = parse_config(
        DATACLASSES,
        [str(path), "--output_dir", "x", "--eval_strategy", "no", "--save_strategy", "no", "--hub_model_id", "1e5"],
    )
    assert args.eval_strategy == IntervalStrategy.NO and args.save_strategy == SaveStrategy.NO
    assert args.hub_model_id == "1e5"
    _, _, args = parse_config(DATACLASSES, [str(path), "--output_dir", "0123", "--lr_scheduler_type", "linear"])
    assert args.output_dir == "0123" and args.lr_scheduler_type == SchedulerType.LINEAR
    names = write_config(tmp_path / "m.yaml", dataset_name="breastmnist", model_name_or_path="a/b", output_dir="x")
    _, model_args, _ = parse_config(DATACLASSES, [str(names), "--model_name_or_path", "0123"])
    assert model_args.model_name_or_path == "0123"
    # Numbers and bools are still read as such.
    _, _, args = parse_config(DATACLASSES, [str(path), "--output_dir", "x", "--max_steps", "7", "--bf16", "no"])
    assert args.max_steps == 7 and args.bf16 is False


@pytest.mark.parametrize("spelling", [["--report_to", "none"], ["--report_to", "no"], ["--report_to=no"]])
def test_report_to_none_or_no_turns_reporting_off(tmp_path: Path, spelling: list[str]) -> None:
    path = write_config(
        tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"}, report_to="all"
    )
    _, _, args = parse_config(DATACLASSES, [str(path), "--output_dir", "x", *spelling])
    assert args.report_to == [] == TrainingArguments(output_dir="x", report_to="none").report_to


def test_report_to_no_in_a_file_turns_reporting_off(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"})
    path.write_text(path.read_text() + "report_to: no\noutput_dir: x\n")  # YAML reads the bare word as false
    assert parse_config(DATACLASSES, [str(path)])[2].report_to == []


def test_strategies_spelt_no_in_a_file_mean_no(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"})
    # YAML 1.1 reads the bare word as false: "False is not a valid IntervalStrategy" before.
    path.write_text(path.read_text() + "eval_strategy: no\nsave_strategy: no\nlogging_strategy: no\noutput_dir: x\n")
    args = parse_config(DATACLASSES, [str(path)])[2]
    assert (args.eval_strategy, args.save_strategy) == (IntervalStrategy.NO, SaveStrategy.NO)
    assert args.logging_strategy == IntervalStrategy.NO
    # A bool field stays a bool, and a strategy spelt `yes` is still refused by transformers.
    path.write_text(path.read_text() + "bf16: no\n")
    assert parse_config(DATACLASSES, [str(path)])[2].bf16 is False
    path.write_text(path.read_text().replace("eval_strategy: no", "eval_strategy: yes"))
    with pytest.raises(ConfigError, match="eval_strategy|True is not a valid"):
        parse_config(DATACLASSES, [str(path)])


@pytest.mark.parametrize(
    "spelling",
    [["--class_names", "A", "B", "C"], ["--class_names", "[A, B, C]"], ["--class_names=[A, B, C]"]],
)
def test_list_fields_take_space_separated_values_or_a_yaml_list(tmp_path: Path, spelling: list[str]) -> None:
    path = write_config(tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"})
    data_args, _, _ = parse_config(DATACLASSES, [str(path), "--output_dir", "x", *spelling, "--crop_scale", "0.5", "1"])
    assert data_args.class_names == ["A", "B", "C"]
    assert data_args.crop_scale == [0.5, 1]


def test_whole_numbers_keep_their_meaning_in_float_fields(tmp_path: Path) -> None:
    # Trainer reads warmup_steps 1 as one step but 1.0 as the whole run; YAML numbers must reach it as written.
    path = write_config(
        tmp_path / "c.yaml", dataset_name=2024, model_config={"model_type": "resnet"}, output_dir="x", warmup_steps=1
    )
    data_args, _, training_args = parse_config(DATACLASSES, [str(path), "--max_steps", "3.0", "--save_steps", "0.5"])
    assert data_args.dataset_name == "2024"  # YAML read a numeric name as an int
    assert training_args.max_steps == 3 and isinstance(training_args.max_steps, int)
    assert training_args.save_steps == 0.5


def test_unknown_key_on_the_command_line_is_said_to_come_from_there(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", dataset_name="breastmnist", model_config={"model_type": "resnet"})
    with pytest.raises(ConfigError, match="Unknown config key 'temprature' on the command line"):
        parse_config(DATACLASSES, [str(path), "--temprature", "2"])


def test_help_lists_every_key_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_config(DATACLASSES, ["--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    for group in DATACLASSES:
        for field in dataclasses.fields(group):
            if field.init:
                assert f"--{field.name} " in printed, field.name
    assert "Class names in label order" in printed  # with its help text (DataArguments.class_names)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(DATACLASSES, [str(tmp_path / "none.yaml")])


def test_precision_auto_is_fp32_without_a_gpu() -> None:
    args = apply_precision(TrainingArguments(output_dir="x", use_cpu=True), "auto")
    assert not args.bf16 and not args.fp16


DISTILL_CONFIGS = sorted(path for path in (ROOT / "configs").glob("*.yaml") if is_distillation_config(path))


@pytest.mark.parametrize("path", DISTILL_CONFIGS, ids=lambda p: p.name)
def test_every_distillation_config_loads_and_validates(path: Path) -> None:
    from trainers.distillation import DistillationArguments

    _, model_args, distill_args, training_args = parse_config(
        (DataArguments, ModelArguments, DistillationArguments, OneCycleTrainingArguments), [str(path)]
    )
    assert distill_args.teacher_model_name_or_path.startswith("runs/")
    assert 0 <= distill_args.alpha <= 1 and distill_args.temperature > 0
    assert training_args.output_dir != distill_args.baseline_output_dir
    assert {path.name for path in DISTILL_CONFIGS} == {
        "distill_vit_base_to_deit_tiny.yaml",
        "quickstart_distill.yaml",
        "vit_quickstart_distill.yaml",
    }


def test_the_recorded_command_names_the_launcher_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    argv = ["c.yaml", "--hub_token", "hf_secret", "--learning_rate", "1e-3"]
    assert launch_command("scripts/finetune.py", argv) == (
        "python scripts/finetune.py c.yaml --hub_token REDACTED --learning_rate 1e-3"
    )
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # set by accelerate launch for the processes it starts
    assert launch_command("scripts/distill.py", ["c.yaml"]) == "accelerate launch scripts/distill.py c.yaml"


PRECISION_REFUSED = "precision is 'half'; use one of auto, fp32, bf16, fp16."


@pytest.mark.parametrize("script", ["finetune", "distill", "lr_find"])
def test_every_recipe_script_refuses_an_unknown_precision_in_one_sentence(script: str, tmp_path: Path) -> None:
    values = {"dataset_name": "breastmnist", "model_config": {"model_type": "resnet"}, "output_dir": str(tmp_path)}
    if script == "distill":
        values["teacher_model_name_or_path"] = str(tmp_path / "teacher")
    config = write_config(tmp_path / "c.yaml", **values, precision="half")
    with pytest.raises(ConfigError, match=f"^{re.escape(PRECISION_REFUSED)}$"):
        load_script(script).main([str(config)])


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("report", ["--models", "teacher", "--dataset_name", "breastmnist"]),
        ("app", ["--models", "teacher", "--dataset_name", "breastmnist"]),
        ("python -m explain", ["--model", "teacher", "--images", "a.png"]),
    ],
)
def test_every_flag_script_refuses_an_unknown_precision_in_the_same_sentence(script: str, arguments: list[str]) -> None:
    main = explain.cli.main if script == "python -m explain" else load_script(script).main
    with pytest.raises(ConfigError, match=f"^{re.escape(PRECISION_REFUSED)}$"):
        main([*arguments, "--precision", "half"])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_means_one_dtype_on_a_cpu(precision: str) -> None:
    dtype = compute_dtype(precision, torch.device("cpu"))
    assert (
        dtype
        == {"auto": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    )
    assert precision_name(dtype) == ("fp32" if precision == "auto" else precision)


def test_flag_scripts_read_both_spellings_and_name_an_unknown_option() -> None:
    data = ["--dataset_name", "breastmnist"]
    dashed, _ = parse_flags((ReportArguments, DataArguments), ["--models", "a", "--batch-size", "8", *data])
    underscored, _ = parse_flags((ReportArguments, DataArguments), ["--models", "a", "--batch_size", "8", *data])
    assert dashed == underscored and dashed.batch_size == 8
    with pytest.raises(ConfigError, match=r"^Unknown option --batch_sise \(did you mean --batch_size\?\)"):
        parse_flags((ReportArguments, DataArguments), ["--models", "a", "--batch_sise", "8", *data])
    with pytest.raises(ConfigError, match=r"^--model_name_or_path is required: A model folder or Hub id"):
        load_script("shrink").parse_arguments(["--method", "int8", "--out", "x"])


@dataclasses.dataclass
class Flags:
    seed: int = 0
    ratio: float = 0.5
    cpu: bool = False
    names: list[str] = dataclasses.field(default_factory=list)


def test_flags_are_read_as_their_fields_types() -> None:
    # Numbers as numbers (YAML would read 010 as octal 8), a whole number in a float field as a float, a bool
    # spelt t/f or bare, and one list value as a list only when it is written as a YAML list.
    read = read_flags((Flags,), ["--seed", "010", "--ratio", "1", "--cpu", "--names", "[a].png"])
    assert read == {"seed": 10, "ratio": 1.0, "cpu": True, "names": ["[a].png"]}
    assert isinstance(read["ratio"], float)
    assert read_flags((Flags,), ["--cpu", "f", "--names", "[a, b]"]) == {"cpu": False, "names": ["a", "b"]}


def test_a_bare_flag_needs_a_value_unless_it_is_a_bool() -> None:
    with pytest.raises(ConfigError, match=r"^--seed needs a value\.$"):
        read_flags((Flags,), ["--seed", "--cpu"])


def test_old_spellings_still_work_and_mean_the_new_option(tmp_path, capsys):
    """One vocabulary (README): --output_dir, --model_name_or_path, --shrink_method, --explain_images,
    --hub_private_repo; the old spellings stay as aliases, on the command line and in a config file."""
    shrink = load_script("shrink")
    old, _ = shrink.parse_arguments(["m", "--method", "prune", "--out", "copy"])
    new, _ = shrink.parse_arguments(["--model_name_or_path", "m", "--shrink_method", "prune", "--output_dir", "copy"])
    assert old == new and (new.shrink_method, new.output_dir) == ("prune", "copy")
    explain_old, _ = explain.cli.parse_arguments(
        ["--model", "m", "--n", "3", "--hub_private", "false", "--images", "a"]
    )
    assert (explain_old.model_name_or_path, explain_old.explain_images, explain_old.hub_private_repo) == ("m", 3, False)
    with pytest.raises(ConfigError, match=r"^--out and --output_dir on the command line are the same option"):
        shrink.parse_arguments(["m", "--shrink_method", "int8", "--out", "a", "--output_dir", "b"])
    with pytest.raises(SystemExit):
        shrink.parse_arguments(["--help"])
    assert "--output-dir OUTPUT_DIR, --out OUTPUT_DIR" in capsys.readouterr().out


@dataclasses.dataclass
class Renamed:
    output_dir: str = dataclasses.field(default="runs", metadata={"aliases": ["--out"]})


def test_a_config_file_reads_an_old_spelling_and_the_command_line_overrides_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("out: old\n")
    assert parse_config((Renamed,), [str(config)])[0].output_dir == "old"
    assert parse_config((Renamed,), [str(config), "--output_dir", "new"])[0].output_dir == "new"
    config.write_text("out: old\noutput_dir: new\n")
    with pytest.raises(ConfigError, match=r"^--out and --output_dir in .*run.yaml are the same option"):
        parse_config((Renamed,), [str(config)])
