"""Explanation-enhanced distillation: the term by hand, where its gradient goes, weight 0, the cache,
every pairing, and that it raises the student's agreement with the teacher."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    DeiTForImageClassificationWithTeacher,
    TrainingArguments,
)

import trainers.distillation
from explain import GradCAM, make_method, scale_to_unit
from explain.attention_gradients import attention_maps
from explain.cam import class_activation_maps
from explain.layers import TargetLayer
from explain.metrics.agreement import agreement
from pipelines import ConfigError, DataArguments, DataError, load_image_dataset
from pipelines.models import build_classifier
from trainers.distillation import DistillationArguments, DistillationTrainer
from trainers.image_classification import build_trainer
from trainers.losses import DistillationLoss, common_grid, explained_classes, explanation_loss
from trainers.teacher_cache import TeacherLogitsCollator

from helpers.data import make_medmnist_npz
from helpers.distill import distill_config
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT
from helpers.project import load_script

PROCESSOR_64 = {**PROCESSOR_32, "size": {"height": 64, "width": 64}}


class PooledLinear(nn.Module):
    """logits = W @ mean_ij(A) + b on a feature map A that is the input itself: Grad-CAM has a closed form here."""

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(len(weight[0]), len(weight))
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(weight))
            self.head.bias.fill_(0.3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).mean(dim=(2, 3)))


def hand_gradcam(image: list[list[list[float]]], weight: list[float]) -> list[list[float]]:
    """Grad-CAM of `PooledLinear` for one class: dS/dA_c = w_c / (h w) everywhere, so the channel weight is
    w_c / (h w) and the map relu(sum_c w_c A_c / (h w))."""
    height, width = len(image[0]), len(image[0][0])
    return [
        [max(0.0, sum(w * image[c][i][j] for c, w in enumerate(weight)) / (height * width)) for j in range(width)]
        for i in range(height)
    ]


def test_maps_and_cosine_term_equal_a_hand_computation() -> None:
    teacher = PooledLinear([[1.0, -2.0], [0.5, 1.5]])
    student = PooledLinear([[2.0, 1.0], [-1.0, 0.5]])
    generator = torch.Generator().manual_seed(0)
    teacher_image = torch.rand(1, 2, 4, 4, generator=generator)  # teacher grid 4x4
    # Student grid 2x2, the common grid; the input requires grad so that the identity "layer" is attached.
    student_image = torch.rand(1, 2, 2, 2, generator=generator).requires_grad_(True)
    cls = torch.tensor([1])
    teacher_maps, _ = class_activation_maps(teacher, TargetLayer("features", teacher.features), teacher_image, cls)
    student_maps, _ = class_activation_maps(
        student, TargetLayer("features", student.features), student_image, cls, create_graph=True
    )
    by_hand_teacher = hand_gradcam(teacher_image[0].tolist(), [0.5, 1.5])
    by_hand_student = hand_gradcam(student_image[0].detach().tolist(), [-1.0, 0.5])
    torch.testing.assert_close(teacher_maps[0], torch.tensor(by_hand_teacher))
    torch.testing.assert_close(student_maps[0], torch.tensor(by_hand_student))
    # create_graph: the map is differentiable, through the gradient too (the head's weights shape the map).
    (head_gradient,) = torch.autograd.grad(student_maps.sum(), student.head.weight, retain_graph=True)
    assert float(head_gradient.abs().sum()) > 0

    # The teacher's 4x4 map area-averaged to 2x2 (each cell the mean of a 2x2 block), then 1 - cosine.
    pooled = [
        sum(by_hand_teacher[2 * i + a][2 * j + b] for a in (0, 1) for b in (0, 1)) / 4 for i in (0, 1) for j in (0, 1)
    ]
    flat_student = [value for row in by_hand_student for value in row]
    dot = sum(p * s for p, s in zip(pooled, flat_student))
    cosine = dot / (math.sqrt(sum(p * p for p in pooled)) * math.sqrt(sum(s * s for s in flat_student)))
    assert common_grid((4, 4), (2, 2)) == (2, 2)
    loss = explanation_loss(student_maps, teacher_maps, (2, 2))
    assert float(loss.detach()) == pytest.approx(1 - cosine, rel=1e-5)
    # l1: half the L1 distance between the two maps scaled to sum 1.
    shares_t = [p / sum(pooled) for p in pooled]
    shares_s = [s / sum(flat_student) for s in flat_student]
    expected_l1 = 0.5 * sum(abs(t - s) for t, s in zip(shares_t, shares_s))
    assert float(explanation_loss(student_maps, teacher_maps, (2, 2), "l1").detach()) == pytest.approx(
        expected_l1, rel=1e-5
    )


def test_blank_teacher_maps_are_left_out_of_the_mean() -> None:
    student = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert float(explanation_loss(student, teacher, (2, 2))) == pytest.approx(0.0, abs=1e-7)
    assert float(explanation_loss(student, torch.zeros_like(teacher), (2, 2))) == 0.0


def test_multi_label_and_label_targets() -> None:
    teacher_logits = torch.tensor([[0.1, 2.0, 0.5], [1.0, -1.0, 0.0], [0.0, 0.3, 0.2]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert explained_classes(teacher_logits, labels, "teacher", True).tolist() == [1, 0, 1]
    # 'label': the true label the teacher scores highest; no true label: the teacher's top label.
    assert explained_classes(teacher_logits, labels, "label", True).tolist() == [2, 0, 1]
    assert explained_classes(teacher_logits, torch.tensor([2, 1, 0]), "label", False).tolist() == [2, 1, 0]


@pytest.fixture
def data(tmp_path: Path):
    make_medmnist_npz(tmp_path / "breastmnist.npz", counts=(32, 8, 8))
    return load_image_dataset(
        DataArguments(dataset_name="breastmnist", data_dir=str(tmp_path), verify_md5=False, train_augmentation=False)
    )


def _trainer(tmp_path, data, teacher, student=None, teacher_processor=None, cache=False, steps=3, **distillation):
    if student is None:
        student = build_classifier(TINY_VIT, data.label_names, image_processor_config=PROCESSOR_32)
    model, processor = student
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        report_to="none",
        max_steps=steps,
        per_device_train_batch_size=8,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
        logging_steps=1,
        seed=0,
    )
    return build_trainer(
        DistillationTrainer,
        model,
        processor,
        args,
        data,
        DataArguments(dataset_name="breastmnist", train_augmentation=False),
        TeacherLogitsCollator,
        teacher=teacher,
        teacher_processor=teacher_processor,
        distillation_args=DistillationArguments("runs/teacher", cache_teacher_logits=cache, **distillation),
    )


def _first_batch(trainer: DistillationTrainer) -> dict:
    trainer.model.train()
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(8)]))


def _gradcam_by_hand(model: nn.Module, layer: nn.Module, pixel_values: torch.Tensor, classes: torch.Tensor):
    """Grad-CAM written out in the test: hook the layer, autograd.grad, tokens to a grid, weights, ReLU."""
    store = {}

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # a frozen teacher: make the output a leaf to differentiate to
            output = output.detach().requires_grad_(True)
        store["a"] = output
        return output

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(pixel_values=pixel_values).logits
    finally:
        handle.remove()
    activation = store["a"]
    (gradient,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), activation, create_graph=True)
    if activation.ndim == 3:  # ViT tokens (B, 1 + 16, C): drop the class token, 4x4 patch grid
        activation, gradient = (t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, 4, 4) for t in (activation, gradient))
    return torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)), logits


def test_trainer_loss_is_distillation_plus_weight_times_the_term_by_hand(tmp_path: Path, data) -> None:
    torch.manual_seed(0)
    # CNN teacher at 64 px (8x8 map) -> ViT student at 32 px (4x4 map): compared on 4x4.
    teacher, teacher_processor = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_64)
    trainer = _trainer(tmp_path, data, teacher, teacher_processor=teacher_processor, explanation_weight=0.7)
    assert trainer.explanation.teacher_grid == (8, 8) and trainer.explanation.grid == (4, 4)
    inputs = _first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, inputs)

    with torch.no_grad():
        classes = teacher(pixel_values=inputs["teacher_pixel_values"]).logits.argmax(dim=1)
    teacher_maps, teacher_logits = _gradcam_by_hand(
        teacher, teacher.resnet.encoder.stages[-1], inputs["teacher_pixel_values"], classes
    )
    student = trainer.model
    student_maps, student_logits = _gradcam_by_hand(
        student, student.vit.layers[-1].layernorm_before, inputs["pixel_values"], classes
    )
    pooled = nn.functional.avg_pool2d(teacher_maps[:, None].detach(), 2)[:, 0].flatten(1)  # 8x8 -> 4x4 blocks
    cosine = nn.functional.cosine_similarity(student_maps.flatten(1), pooled, dim=1)
    plain = DistillationLoss()(student_logits, teacher_logits.detach(), inputs["labels"])
    expected = (plain + 0.7 * (1 - cosine).mean()).detach()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-4)
    assert float((1 - cosine).mean().detach()) > 0.05  # the term is not negligible, so the check above weighs it


def test_the_terms_gradient_reaches_the_student_and_never_the_teacher(tmp_path: Path, data) -> None:
    torch.manual_seed(0)
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    trainer = _trainer(tmp_path, data, teacher, explanation_weight=1.0)
    inputs = _first_batch(trainer)
    with_term = trainer.compute_loss(trainer.model, inputs)
    trainer.explanation, term = None, trainer.explanation
    without = trainer.compute_loss(trainer.model, inputs)
    trainer.explanation = term
    student = trainer.model
    # Before the target layer (reached through the activation) and after it (through the gradient: create_graph).
    embedding, head = student.vit.embeddings.patch_embeddings.projection.weight, student.classifier.weight
    grads = torch.autograd.grad(with_term - without, [embedding, head], retain_graph=True)
    assert all(float(grad.abs().sum()) > 0 for grad in grads)
    with_term.backward()
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)


def test_weight_zero_is_exactly_plain_distillation(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    results = []
    # No extra work at all: no map is computed (a call would fail) and no hook is left on the student.
    monkeypatch.setattr(trainers.distillation, "class_activation_maps", None)
    monkeypatch.setattr(trainers.distillation, "maps_from_activation", None)
    for extra in ({}, {"explanation_weight": 0.0, "explanation_method": "layercam", "student_target_layer": "vit"}):
        torch.manual_seed(0)
        trainer = _trainer(tmp_path, data, teacher, cache=True, **extra)
        loss = float(trainer.compute_loss(trainer.model, _first_batch(trainer)).detach())
        trainer.train()
        results.append((loss, trainer.cache_key(), {k: v.clone() for k, v in trainer.model.state_dict().items()}))
        assert trainer.explanation is None and "teacher_maps" not in trainer.train_dataset.column_names
        assert not any(module._forward_hooks for module in trainer.model.modules())
    (loss_a, key_a, weights_a), (loss_b, key_b, weights_b) = results
    assert loss_a == loss_b and key_a == key_b
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)


def test_cached_and_uncached_teacher_maps_give_the_same_loss(tmp_path: Path, data) -> None:
    teacher, teacher_processor = build_classifier(
        TINY_RESNET, data.label_names, image_processor_config={**PROCESSOR_64, "image_mean": [0.4] * 3}
    )
    torch.manual_seed(0)
    cached = _trainer(tmp_path, data, teacher, teacher_processor=teacher_processor, cache=True, explanation_weight=2.0)
    torch.manual_seed(0)
    uncached = _trainer(tmp_path, data, teacher, teacher_processor=teacher_processor, explanation_weight=2.0)
    assert cached.uses_cached_logits and "teacher_maps" in cached.train_dataset.column_names
    assert not uncached.uses_cached_logits
    loss_cached = cached.compute_loss(cached.model, _first_batch(cached))
    loss_uncached = uncached.compute_loss(uncached.model, _first_batch(uncached))
    torch.testing.assert_close(loss_cached, loss_uncached, rtol=1e-5, atol=1e-6)
    # The cache's key changes with the method, the target and the teacher's layer, and differs from plain logits'.
    keys = {cached.cache_key()}
    for change in (
        {"method": "layercam"},
        {"target": "label"},
        {"teacher_layer": TargetLayer("resnet", teacher.resnet)},
    ):
        cached.explanation, term = replace(cached.explanation, **change), cached.explanation
        keys.add(cached.cache_key())
        cached.explanation = term
    cached.explanation = None
    keys.add(cached.cache_key())
    assert len(keys) == 5


@pytest.mark.parametrize("pairing", ["cnn->vit", "vit->cnn", "vit->deit with token"])
def test_every_pairing_trains(tmp_path: Path, data, pairing: str) -> None:
    torch.manual_seed(0)
    teacher_config = TINY_RESNET if pairing == "cnn->vit" else TINY_VIT
    teacher, teacher_processor = build_classifier(teacher_config, data.label_names, image_processor_config=PROCESSOR_32)
    extra, grid = {}, (4, 4)
    if pairing == "cnn->vit":
        student = build_classifier(TINY_VIT, data.label_names, image_processor_config=PROCESSOR_32)
    elif pairing == "vit->cnn":  # a 64 px CNN student: 8x8 map, brought to the ViT teacher's 4x4
        student = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_64)
    else:
        student = build_classifier(
            {**TINY_VIT, "model_type": "deit"},
            data.label_names,
            image_processor_config=PROCESSOR_32,
            model_class=DeiTForImageClassificationWithTeacher,
        )
        extra = {"deit_distillation_token": True}
    trainer = _trainer(tmp_path, data, teacher, student, teacher_processor, explanation_weight=1.0, **extra)
    assert trainer.explanation.grid == grid
    inputs = _first_batch(trainer)
    term_on = float(trainer.compute_loss(trainer.model, inputs).detach())
    trainer.explanation, term = None, trainer.explanation
    term_off = float(trainer.compute_loss(trainer.model, inputs).detach())
    trainer.explanation = term
    assert term_on > term_off  # the term takes part (1 - cosine > 0 on untrained models)
    before = {name: p.clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert all(not torch.equal(p, before[name]) for name, p in trainer.model.named_parameters() if "classifier" in name)


def test_a_short_run_raises_the_students_agreement_with_the_teacher(tmp_path: Path, data) -> None:
    torch.manual_seed(0)
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    means = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        student = build_classifier(TINY_VIT, data.label_names, image_processor_config=PROCESSOR_32)
        trainer = _trainer(tmp_path, data, teacher, student, cache=True, steps=12, explanation_weight=weight)
        trainer.args.learning_rate = 1e-3
        trainer.train()
        images = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        teacher_maps = GradCAM(trainer.teacher.float())(trainer.teacher_preprocess(images["pixel_values"], train=False))
        student_maps = GradCAM(trainer.model)(
            trainer.preprocess(images["pixel_values"], train=False), teacher_maps.target
        )
        result = agreement(teacher_maps.maps, student_maps.maps, teacher_maps.target, student_maps.target)
        means[weight] = result.numbers(0.1)["rank_correlation_mean"]
    assert means[1.0] > means[0.0] + 0.3, means


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"explanation_weight": -0.5}, "explanation_weight is -0.5; it must be 0 \\(off\\) or more"),
        (
            {"explanation_method": "eigencam"},
            "'eigencam', which cannot be kept differentiable; use one of gradcam, .*, layercam, gradient_rollout, legrad",
        ),
        ({"explanation_method": "attention_rollout"}, "cannot be kept differentiable"),
        ({"explanation_method": "captum_gradcam"}, "cannot be kept differentiable"),
        ({"explanation_method": "no-such"}, "cannot be kept differentiable"),
        ({"explanation_target": "student"}, "use 'teacher' or 'label'"),
        ({"explanation_measure": "kl"}, "use 'cosine' or 'l1'"),
    ],
)
def test_bad_explanation_arguments_are_one_sentence(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DistillationArguments(teacher_model_name_or_path="runs/teacher", **values)


def test_aliases_name_the_same_method() -> None:
    arguments = DistillationArguments(teacher_model_name_or_path="t", explanation_method="Grad-CAM")
    assert arguments.explanation_method == "gradcam"


@pytest.mark.parametrize("method", ["gradient_rollout", "legrad"])
def test_attention_methods_term_is_the_attention_maps_of_both_models_at_the_teachers_class(
    tmp_path: Path, data, method: str
) -> None:
    torch.manual_seed(0)
    teacher, _ = build_classifier(TINY_VIT, data.label_names, image_processor_config=PROCESSOR_32)
    student = build_classifier(
        {**TINY_VIT, "model_type": "deit"},
        data.label_names,
        image_processor_config=PROCESSOR_32,
        model_class=DeiTForImageClassificationWithTeacher,
    )
    trainer = _trainer(
        tmp_path,
        data,
        teacher,
        student,
        explanation_weight=0.7,
        explanation_method=method,
        deit_distillation_token=True,
    )
    assert trainer.explanation.teacher_layer is None and trainer.explanation.grid == (4, 4)
    inputs = _first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, inputs)

    model = trainer.model
    with torch.no_grad():
        teacher_logits = teacher(pixel_values=inputs["teacher_pixel_values"]).logits
    classes = teacher_logits.argmax(dim=1)
    # The term's maps are the explain package's maps of each model at the teacher's class, before scaling.
    student_maps, _ = attention_maps(model, inputs["pixel_values"], classes, method, create_graph=True)
    explained = make_method(method, model)
    explained.upsample = False
    assert torch.allclose(
        explained(inputs["pixel_values"], classes).maps, scale_to_unit(student_maps.detach()), atol=1e-5
    )
    outputs = model(pixel_values=inputs["pixel_values"])
    plain = DistillationLoss()(outputs.cls_logits, teacher_logits, inputs["labels"], outputs.distillation_logits)
    term_maps, _ = attention_maps(teacher, inputs["teacher_pixel_values"], classes, method)
    expected = plain + 0.7 * explanation_loss(student_maps, term_maps, (4, 4))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    assert float(explanation_loss(student_maps, term_maps, (4, 4)).detach()) > 0.01
    # Its gradient reaches the student's first attention layer (create_graph) and never the teacher.
    query = next(p for name, p in model.named_parameters() if name.endswith("layers.0.attention.q_proj.weight"))
    (gradient,) = torch.autograd.grad(loss - plain, query)
    assert float(gradient.abs().sum()) > 0
    assert all(not p.requires_grad for p in teacher.parameters())


def test_attention_methods_need_two_transformers(tmp_path: Path, data) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    with pytest.raises(
        ConfigError,
        match=r"^explanation_method legrad reads attention, but the teacher is a resnet model; use a gradient CAM",
    ):
        _trainer(tmp_path, data, teacher, explanation_weight=1.0, explanation_method="legrad")


def test_missing_layers_and_unaligned_grids_are_one_sentence(tmp_path: Path, data) -> None:
    teacher, _ = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    with pytest.raises(ConfigError, match="^teacher_target_layer: Layer 'nope' is not in this resnet model"):
        _trainer(tmp_path, data, teacher, explanation_weight=1.0, teacher_target_layer="nope")
    with pytest.raises(ConfigError, match="^student_target_layer: Layer 'nope' is not in this vit model"):
        _trainer(tmp_path, data, teacher, explanation_weight=1.0, student_target_layer="nope")
    # The pooled output of the teacher is one cell: nothing to align.
    with pytest.raises(DataError, match="grids cannot be aligned"):
        _trainer(tmp_path, data, teacher, explanation_weight=1.0, teacher_target_layer="resnet.pooler")
    with pytest.raises(DataError, match="teacher's 4x8 and the student's 8x4 Grad-CAM grids cannot be aligned"):
        common_grid((4, 8), (8, 4))


def test_the_results_table_shows_each_students_agreement_with_the_teacher(tmp_path: Path) -> None:
    config = distill_config(tmp_path, explanation_weight=1.0, train_baseline=False)  # its row: the same code
    result = load_script("distill").main([str(config)])
    rows = json.loads((tmp_path / "student" / "results.json").read_text())["rows"]
    assert result["rows"] == rows and rows[0]["agreement"] is None
    # Recomputed here from the saved folders: each model's own image processor, explain's Grad-CAM, both at the
    # teacher's class, on every test image.
    with np.load(tmp_path / "data" / "breastmnist.npz") as arrays:
        images = torch.from_numpy(arrays["test_images"])[:, None].repeat(1, 3, 1, 1)
    maps = {}
    for folder in ("teacher", "student"):
        model = AutoModelForImageClassification.from_pretrained(tmp_path / folder).eval()
        pixels = AutoImageProcessor.from_pretrained(tmp_path / folder)(images=images, return_tensors="pt")
        classes = None if folder == "teacher" else maps["teacher"].target
        maps[folder] = GradCAM(model)(pixels["pixel_values"], classes)
    numbers = agreement(maps["teacher"].maps, maps["student"].maps, maps["teacher"].target, maps["student"].target)
    numbers = numbers.numbers(0.1)
    measured = rows[1]["agreement"]
    assert measured["pairs"] == numbers["pairs"] > 0 and measured["images"] == len(images)
    for key in ("rank_correlation_mean", "top10_iou_mean"):  # the two preprocessings agree to float rounding
        assert measured[key] == pytest.approx(numbers[key], abs=2e-3), key
    cells = f"| {measured['rank_correlation_mean']:.4f} | {measured['top10_iou_mean']:.4f} | {numbers['pairs']}/"
    assert cells in (tmp_path / "student" / "results.md").read_text()
    assert (
        "explanation term 1 x cosine of gradcam at the teacher's class"
        in (tmp_path / "student" / "README.md").read_text()
    )
