"""DistillationTrainer: the loss by hand, a frozen teacher, the logit cache, label-space checks, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, DeiTForImageClassificationWithTeacher, TrainingArguments, ViTImageProcessor

from pipelines import ConfigError, DataArguments, DataError, load_image_dataset
from pipelines.models import build_classifier, load_classifier
from trainers.distillation import DistillationArguments, DistillationTrainer
from trainers.image_classification import build_trainer
from trainers.losses import DistillationLoss, classification_loss
from trainers.teacher_cache import TeacherLogitsCollator

from helpers.data import make_medmnist_npz
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT

STUDENT = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
LABELS = torch.tensor([0, 1])


def test_soft_loss_equals_a_hand_computation_with_the_t_squared_factor() -> None:
    temperature, alpha = 2.0, 0.3
    kl_terms = []
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
        t_exp = [math.exp(v / temperature) for v in t_row]
        s_exp = [math.exp(v / temperature) for v in s_row]
        p = [v / sum(t_exp) for v in t_exp]
        q = [v / sum(s_exp) for v in s_exp]
        kl_terms.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    kl = sum(kl_terms) / len(kl_terms)
    ce = (
        sum(-math.log(math.exp(row[y]) / sum(math.exp(v) for v in row)) for row, y in zip(STUDENT.tolist(), [0, 1])) / 2
    )
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    loss = DistillationLoss(alpha=alpha, temperature=temperature)(STUDENT, TEACHER, LABELS)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_the_label_loss_and_alpha_one_the_distillation_term_alone() -> None:
    label_loss = classification_loss(STUDENT, LABELS)
    assert float(DistillationLoss(alpha=0.0)(STUDENT, TEACHER, LABELS)) == pytest.approx(float(label_loss))
    only_teacher = DistillationLoss(alpha=1.0, temperature=3.0)(STUDENT, TEACHER, torch.tensor([2, 2]))
    same_with_other_labels = DistillationLoss(alpha=1.0, temperature=3.0)(STUDENT, TEACHER, LABELS)
    assert float(only_teacher) == pytest.approx(float(same_with_other_labels))
    expected = 9.0 * F.kl_div(
        F.log_softmax(STUDENT / 3, -1), F.log_softmax(TEACHER / 3, -1), log_target=True, reduction="batchmean"
    )
    assert float(only_teacher) == pytest.approx(float(expected))
    assert float(DistillationLoss(alpha=1.0)(TEACHER, TEACHER, LABELS)) == pytest.approx(0.0, abs=1e-7)


def test_hard_distillation_uses_the_teacher_argmax_as_a_second_label() -> None:
    loss = DistillationLoss(alpha=0.5, hard=True)(STUDENT, TEACHER, LABELS)
    expected = 0.5 * F.cross_entropy(STUDENT, torch.tensor([0, 2])) + 0.5 * F.cross_entropy(STUDENT, LABELS)
    assert float(loss) == pytest.approx(float(expected))


def test_multi_label_soft_term_is_bernoulli_kl_at_temperature() -> None:
    student, teacher = torch.tensor([[0.4, -1.0]]), torch.tensor([[2.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0]])
    temperature = 2.0
    terms = []
    for s, t in zip(student[0].tolist(), teacher[0].tolist()):
        p, q = 1 / (1 + math.exp(-t / temperature)), 1 / (1 + math.exp(-s / temperature))
        terms.append(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
    expected = temperature**2 * sum(terms) / 2
    loss = DistillationLoss(alpha=1.0, temperature=temperature, multi_label=True)(student, teacher, labels)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    hard = DistillationLoss(alpha=1.0, hard=True, multi_label=True)(student, teacher, labels)
    assert float(hard) == pytest.approx(float(F.binary_cross_entropy_with_logits(student, torch.ones(1, 2))))


def test_deit_style_trains_the_class_head_on_labels_and_the_distillation_head_on_the_teacher() -> None:
    distill_head = torch.tensor([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    loss = DistillationLoss(alpha=0.4, temperature=1.0)(STUDENT, TEACHER, LABELS, distill_head)
    expected = 0.4 * DistillationLoss(alpha=1.0, temperature=1.0)(
        distill_head, TEACHER, LABELS
    ) + 0.6 * F.cross_entropy(STUDENT, LABELS)
    assert float(loss) == pytest.approx(float(expected))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": 0.0}, "temperature is 0.0"),
        ({"temperature": -1.0}, "greater than 0"),
        ({"alpha": 1.5}, "alpha is 1.5"),
        ({"alpha": -0.1}, "in \\[0, 1\\]"),
        ({"distillation_type": "medium"}, "'soft' or 'hard'"),
        ({"teacher_model_name_or_path": None}, "teacher_model_name_or_path is required"),
    ],
)
def test_bad_distillation_arguments_are_one_sentence(values: dict, message: str) -> None:
    arguments = {"teacher_model_name_or_path": "runs/teacher", **values}
    with pytest.raises(ConfigError, match=message):
        DistillationArguments(**arguments)


@pytest.fixture
def data(tmp_path: Path):
    make_medmnist_npz(tmp_path / "breastmnist.npz", counts=(24, 8, 8))
    return load_image_dataset(
        DataArguments(dataset_name="breastmnist", data_dir=str(tmp_path), verify_md5=False, train_augmentation=False)
    )


def _args(tmp_path: Path, **overrides) -> TrainingArguments:
    values = {
        "output_dir": str(tmp_path / "run"),
        "use_cpu": True,
        "report_to": "none",
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "save_strategy": "no",
        "disable_tqdm": True,
        "learning_rate": 1e-2,
    }
    return TrainingArguments(**{**values, **overrides})


def _distiller(
    tmp_path, data, teacher, teacher_processor=None, cache=False, augment=False, **distillation
) -> DistillationTrainer:
    student, processor = build_classifier(TINY_VIT, data.label_names, image_processor_config=PROCESSOR_32)
    data_args = DataArguments(dataset_name="breastmnist", train_augmentation=augment)
    return build_trainer(
        DistillationTrainer,
        student,
        processor,
        _args(tmp_path),
        data,
        data_args,
        TeacherLogitsCollator,
        teacher=teacher,
        teacher_processor=teacher_processor,
        distillation_args=DistillationArguments("runs/teacher", cache_teacher_logits=cache, **distillation),
    )


def test_teacher_gets_no_gradient_and_does_not_change(tmp_path: Path, data) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    trainer = _distiller(tmp_path, data, teacher, augment=True)
    student_before = next(trainer.model.parameters()).clone()
    trainer.train()
    assert not trainer.teacher.training
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
    for name, tensor in trainer.teacher.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, msg=name)  # BatchNorm stats included
    assert not torch.equal(next(trainer.model.parameters()), student_before)  # the student did learn


def _first_batch_loss(trainer: DistillationTrainer) -> torch.Tensor:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.model.train()
    inputs = trainer._prepare_inputs(batch)
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, inputs)


def test_cached_and_uncached_teacher_logits_give_the_same_loss(tmp_path: Path, data) -> None:
    teacher, teacher_processor = build_classifier(
        TINY_RESNET, data.label_names, image_processor_config={**PROCESSOR_32, "image_mean": [0.4] * 3}
    )
    torch.manual_seed(0)
    cached = _distiller(tmp_path, data, teacher, teacher_processor, cache=True)
    torch.manual_seed(0)
    uncached = _distiller(tmp_path, data, teacher, teacher_processor, cache=False)
    assert cached.uses_cached_logits and not uncached.uses_cached_logits
    assert "teacher_logits" in cached.train_dataset.column_names
    torch.testing.assert_close(_first_batch_loss(cached), _first_batch_loss(uncached), rtol=1e-5, atol=1e-6)
    files = list(cached.teacher_cache_folder.glob("teacher-logits-*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    torch.manual_seed(0)
    again = _distiller(tmp_path, data, teacher, teacher_processor, cache=True)
    assert files[0].stat().st_mtime_ns == stamp  # read back, not recomputed
    torch.testing.assert_close(_first_batch_loss(again), _first_batch_loss(cached))


def test_with_augmentation_the_teacher_sees_the_students_crops_through_its_own_processor(tmp_path: Path, data) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    teacher_processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.2] * 3, image_std=[0.25] * 3)
    trainer = _distiller(tmp_path, data, teacher, teacher_processor, cache=True, augment=True)
    assert not trainer.uses_cached_logits  # augmentation on: the teacher must see each augmented batch
    trainer.model.train()
    inputs = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(8)]))
    student_pixels = inputs["pixel_values"] * 0.5 + 0.5  # undo each normalisation: the same crops of the same images
    teacher_pixels = inputs["teacher_pixel_values"] * 0.25 + 0.2
    torch.testing.assert_close(student_pixels, teacher_pixels, rtol=0, atol=1e-5)


def test_label_space_mismatch_is_refused_before_training(tmp_path: Path, data) -> None:
    three_labels, _ = build_classifier(TINY_RESNET, ["a", "b", "c"], image_processor_config=PROCESSOR_32)
    with pytest.raises(ConfigError, match="teacher has 3 labels and the student 2"):
        _distiller(tmp_path, data, three_labels)
    renamed, _ = build_classifier(TINY_RESNET, ["benign", "malignant"], image_processor_config=PROCESSOR_32)
    with pytest.raises(ConfigError, match="differ from the student's"):
        _distiller(tmp_path, data, renamed)


def test_deit_style_needs_a_student_with_a_distillation_head(tmp_path: Path, data) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    with pytest.raises(ConfigError, match="distillation head"):
        _distiller(tmp_path, data, teacher, deit_distillation_token=True)
    with pytest.raises(
        DataError,
        match="'vit' model; DeiTForImageClassificationWithTeacher needs a 'deit' model: give a 'deit' model_config or checkpoint, or .*deit_distillation_token: true",
    ):
        build_classifier(TINY_VIT, data.label_names, model_class=DeiTForImageClassificationWithTeacher)


def test_deit_student_with_distillation_token_trains(tmp_path: Path, data) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    student, processor = build_classifier(
        {**TINY_VIT, "model_type": "deit"},
        data.label_names,
        image_processor_config=PROCESSOR_32,
        model_class=DeiTForImageClassificationWithTeacher,
    )
    trainer = build_trainer(
        DistillationTrainer,
        student,
        processor,
        _args(tmp_path),
        data,
        DataArguments(dataset_name="breastmnist"),
        TeacherLogitsCollator,
        teacher=teacher,
        distillation_args=DistillationArguments(
            "runs/teacher", deit_distillation_token=True, alpha=0.3, temperature=3.0, cache_teacher_logits=False
        ),
    )
    head = student.distillation_classifier.weight.clone()
    trainer.train()
    assert not torch.equal(student.distillation_classifier.weight, head)
    predictions = trainer.predict(data.dataset["test"])
    assert predictions.predictions.shape == (8, 2)  # the combined logits only, not the three heads

    # The training loss on one batch, by hand: the distillation head matches the teacher at T, the class head
    # learns the labels; `outputs.logits` (the mean of both heads) takes part in neither.
    trainer.model.train()
    inputs = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(8)]))
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, inputs, return_outputs=True)
        teacher_logits = teacher(pixel_values=inputs["teacher_pixel_values"]).logits
    kl = F.kl_div(
        F.log_softmax(outputs.distillation_logits / 3.0, -1),
        F.log_softmax(teacher_logits / 3.0, -1),
        log_target=True,
        reduction="batchmean",
    )
    expected = 0.3 * 9.0 * kl + 0.7 * F.cross_entropy(outputs.cls_logits, inputs["labels"])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # The heads disagree enough that the same loss on their mean would differ (else the check above proves nothing).
    on_the_mean = DistillationLoss(alpha=0.3, temperature=3.0)(outputs.logits, teacher_logits, inputs["labels"])
    assert float(on_the_mean) != pytest.approx(float(expected), rel=1e-3)


def test_a_checkpoint_that_is_not_an_image_classifier_is_refused(tmp_path: Path) -> None:
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert"
    )
    (tmp_path / "bert" / "model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="'bert' model, which transformers cannot load as an image classifier"):
        load_classifier(str(tmp_path / "bert"))
