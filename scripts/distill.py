"""Distill a teacher into a student: `accelerate launch scripts/distill.py configs/<name>.yaml [--key value ...]`.

Trains the student with `DistillationTrainer` into `output_dir` and the same student without a teacher into
`baseline_output_dir` (unless `baseline_model_name_or_path` names one, or `train_baseline` is false); then
measures all the models (parameters, size, latency, test metrics, each student's Grad-CAM agreement with the
teacher on the test split), prints the table and saves it as
results.md / results.json in the student's folder beside a model card (README.md). With `push_to_hub: true`
and `hub_model_id`, that folder is published (private unless `hub_private_repo: false`).
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import copy
import sys

from transformers import DeiTForImageClassificationWithTeacher, TrainingArguments, set_seed

from pipelines import DataArguments, load_image_dataset, run_cli
from pipelines.config import parse_config
from pipelines.errors import ConfigError
from pipelines.locks import run_folder_lock
from pipelines.models import load_classifier
from trainers.arguments import (
    ModelArguments,
    OneCycleTrainingArguments,
    apply_precision,
    hide_hub_token,
    launch_command,
)
from trainers.checkpoints import refuse_to_replace_a_model
from trainers.distill_results import measure_row, write_results, write_seed_summary
from trainers.distillation import (
    DistillationArguments,
    DistillationTrainer,
    check_same_label_space,
    describe_distillation,
)
from trainers.hub import build_model_card, planned_push, push_folder, write_model_card
from trainers.image_classification import ImageClassificationTrainer, build_trainer, train_and_save
from trainers.modeling import classifier_from_args
from trainers.run_outputs import dataset_description, evaluate_and_report, recorded_command
from trainers.teacher_cache import TeacherLogitsCollator


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parsed = parse_config((DataArguments, ModelArguments, DistillationArguments, OneCycleTrainingArguments), argv)
    if parsed[2].seeds:
        return distill_over_seeds(argv, *parsed)
    return distill_once(argv, *parsed)


def distill_over_seeds(
    argv: list[str],
    data_args: DataArguments,
    model_args: ModelArguments,
    distill_args: DistillationArguments,
    training_args: TrainingArguments,
) -> dict:
    """The recipe once per seed, students into <output_dir>/seed-<N> and <baseline_output_dir>/seed-<N>; then the
    table of means and standard deviations (and the paired distilled-minus-alone difference) in <output_dir>."""
    baseline_dir = distill_args.baseline_output_dir or f"{training_args.output_dir}-no-teacher"
    runs = {}
    for seed in distill_args.seeds:
        seed_argv = [*argv, "--seed", str(seed), "--output_dir", f"{training_args.output_dir}/seed-{seed}"]
        seed_argv += ["--baseline_output_dir", f"{baseline_dir}/seed-{seed}"]
        seed_distill, seed_training = copy.deepcopy(distill_args), copy.deepcopy(training_args)
        seed_distill.seeds, seed_distill.baseline_output_dir = None, f"{baseline_dir}/seed-{seed}"
        seed_training.seed, seed_training.output_dir = seed, f"{training_args.output_dir}/seed-{seed}"
        runs[seed] = distill_once(seed_argv, data_args, model_args, seed_distill, seed_training)["rows"]
    if not runs[distill_args.seeds[0]]:  # not the main process
        return {}
    table = write_seed_summary(training_args.output_dir, runs, launch_command("scripts/distill.py", argv))
    print(f"\n{table}\n\nSaved in {training_args.output_dir}: results.md, results.json")
    return {"runs": runs}


def distill_once(
    argv: list[str],
    data_args: DataArguments,
    model_args: ModelArguments,
    distill_args: DistillationArguments,
    training_args: TrainingArguments,
) -> dict:
    """One distillation run: the student, the student without a teacher, the table, the card, the push."""
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ConfigError(
            "push_to_hub is true but hub_model_id is not set; give the repo id, e.g. you/deit-tiny-distilled."
        )
    apply_precision(training_args, model_args.precision)
    hide_hub_token(training_args)
    # Publish once, after the table exists (Trainer must not push checkpoints); refused now if it cannot happen.
    push_to_hub = planned_push(training_args) is not None

    trains_baseline = distill_args.train_baseline and not distill_args.baseline_model_name_or_path
    baseline_dir = distill_args.baseline_output_dir or f"{training_args.output_dir}-no-teacher"
    for folder in (training_args.output_dir, *([baseline_dir] if trains_baseline else [])):
        refuse_to_replace_a_model(folder, training_args)
    with run_folder_lock(training_args.output_dir, *([baseline_dir] if trains_baseline else [])):
        return distill_locked(data_args, model_args, distill_args, training_args, push_to_hub, baseline_dir, argv)


def distill_locked(
    data_args: DataArguments,
    model_args: ModelArguments,
    distill_args: DistillationArguments,
    training_args: TrainingArguments,
    push_to_hub: bool,
    baseline_dir: str,
    argv: list[str],
) -> dict:
    """The recipe, while this run holds its folders: train the student (and its baseline), measure, report."""
    with training_args.main_process_first(desc="load dataset"):
        data = load_image_dataset(data_args)
    teacher, teacher_processor = load_classifier(distill_args.teacher_model_name_or_path, **model_args.loading_options)
    student_class = DeiTForImageClassificationWithTeacher if distill_args.deit_distillation_token else None
    set_seed(training_args.seed)  # a student built from a config starts from the same weights in every run
    student, processor = classifier_from_args(model_args, data, student_class)
    check_same_label_space(teacher, student)

    def wire(trainer_class: type, model, image_processor, args: TrainingArguments, **extra):
        return build_trainer(
            trainer_class, model, image_processor, args, data, data_args, TeacherLogitsCollator, **extra
        )

    trainer = wire(
        DistillationTrainer,
        student,
        processor,
        training_args,
        teacher=teacher,
        teacher_processor=teacher_processor,
        distillation_args=distill_args,
    )
    if training_args.do_train:
        train_and_save(trainer)
    command = launch_command("scripts/distill.py", argv)
    student_test = evaluate_and_report(trainer, data, training_args.output_dir, command)["test"]

    repeats = distill_args.latency_repeats
    # DistillationTrainer cast the teacher to the compute dtype; Trainer evaluates in fp32 (as the students are).
    teacher_trainer = wire(ImageClassificationTrainer, teacher.float(), teacher_processor, copy.deepcopy(training_args))
    rows = [
        measure_row("teacher", teacher_trainer, distill_args.teacher_model_name_or_path, data, repeats),
        measure_row(
            "student (distilled)", trainer, training_args.output_dir, data, repeats, student_test, teacher_trainer
        ),
    ]
    if distill_args.baseline_model_name_or_path or distill_args.train_baseline:
        baseline_args = copy.deepcopy(training_args)
        if distill_args.baseline_model_name_or_path:
            baseline_args.output_dir = distill_args.baseline_model_name_or_path
            baseline, baseline_processor = load_classifier(
                baseline_args.output_dir, allow_pickle=model_args.allow_pickle
            )
            baseline_trainer = wire(ImageClassificationTrainer, baseline, baseline_processor, baseline_args)
            baseline_test = None
        else:
            baseline_args.output_dir = baseline_dir
            baseline, _ = classifier_from_args(model_args, data, student_class)
            baseline_trainer = wire(ImageClassificationTrainer, baseline, processor, baseline_args)
            train_and_save(baseline_trainer)
            baseline_test = evaluate_and_report(baseline_trainer, data, baseline_args.output_dir)["test"]
        rows.append(
            measure_row(
                "student (no teacher)",
                baseline_trainer,
                baseline_args.output_dir,
                data,
                repeats,
                baseline_test,
                teacher_trainer,
            )
        )

    if not trainer.is_world_process_zero():
        return {"rows": []}
    table = write_results(training_args.output_dir, rows, command)
    card = build_model_card(
        rows,
        model_name=training_args.hub_model_id or training_args.output_dir,
        dataset=dataset_description(data_args),
        base_model=model_args.model_name_or_path,
        teacher=distill_args.teacher_model_name_or_path,
        commands=[c for c in (recorded_command(distill_args.teacher_model_name_or_path), command) if c],
        distillation=describe_distillation(distill_args),
        model_folder=training_args.output_dir,
    )
    write_model_card(training_args.output_dir, card)
    print(f"\n{table}\n\nSaved in {training_args.output_dir}: results.md, results.json, README.md (model card)")
    if push_to_hub:
        url = push_folder(
            training_args.output_dir,
            training_args.hub_model_id,
            private=training_args.hub_private_repo is not False,
            token=training_args.hub_token,
        )
        print(f"Published {training_args.output_dir} to {url}")
    return {"rows": [row.as_dict() for row in rows]}


if __name__ == "__main__":
    run_cli(main)
