"""The CIFAR ResNet-18 as a transformers model: its size, its last stage for Grad-CAM, saving and reloading,
`transformers.pipeline` without remote code, and distillation on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForImageClassification, TrainingArguments

from explain import GradCAM, resolve_target_layer
from pipelines import DataArguments, DevicePreprocess, load_image_dataset
from pipelines.models import build_classifier, load_classifier
from pipelines.models.cifar_resnet import CifarResNetConfig, CifarResNetForImageClassification
from trainers.distillation import DistillationArguments, DistillationTrainer
from trainers.image_classification import build_trainer
from trainers.teacher_cache import TeacherLogitsCollator

from helpers.data import make_medmnist_npz
from helpers.project import ROOT

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PROCESSOR_32 = {"size": {"height": 32, "width": 32}, "image_mean": [0.49, 0.48, 0.45], "image_std": [0.25] * 3}
TINY_CIFAR_RESNET = {"model_type": "cifar_resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 32]}


def full_resnet18() -> CifarResNetForImageClassification:
    torch.manual_seed(0)
    model, _ = build_classifier({"model_type": "cifar_resnet"}, CIFAR_CLASSES, image_processor_config=PROCESSOR_32)
    return model.eval()


def test_resnet18_for_10_classes_has_the_seeds_11173962_parameters() -> None:
    model = full_resnet18()
    assert isinstance(model, CifarResNetForImageClassification)
    assert sum(parameter.numel() for parameter in model.parameters()) == 11_173_962
    assert sum(parameter.numel() for parameter in model.classifier.parameters()) == 512 * 10 + 10
    stem = model.resnet.embedder[0][0]
    assert (stem.kernel_size, stem.stride) == ((3, 3), (1, 1))  # no 7x7 stride-2 stem, no max-pool
    assert [len(stage) for stage in model.resnet.stages] == [2, 2, 2, 2]


def test_grad_cam_reads_the_last_stage_a_4x4_map_at_32_px() -> None:
    model = full_resnet18()
    layer = resolve_target_layer(model)
    assert layer.name == "resnet.stages.3" and layer.module is model.resnet.stages[-1]
    shapes = []
    handle = layer.module.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    try:
        torch.manual_seed(1)
        maps = GradCAM(model)(torch.randn(2, 3, 32, 32)).maps
    finally:
        handle.remove()
    assert shapes[0] == (2, 512, 4, 4)
    assert maps.shape == (2, 32, 32)
    assert all(len(torch.unique(image_map)) > 1 for image_map in maps)  # not one value per image
    # transformers' own ResNet-18 leaves a 1x1 map at 32 px, which is why this model exists.
    hub_style = AutoModelForImageClassification.from_config(
        AutoConfig.for_model("resnet", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic")
    ).eval()
    assert hub_style(torch.zeros(1, 3, 32, 32), output_hidden_states=True).hidden_states[-1].shape[-2:] == (1, 1)


def test_saved_as_safetensors_and_reloaded_it_gives_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, processor = build_classifier(TINY_CIFAR_RESNET, CIFAR_CLASSES, image_processor_config=PROCESSOR_32)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # batch-norm statistics move away from their initial values, and must be saved
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "cifar_resnet" and "auto_map" not in saved
    assert saved["architectures"] == ["CifarResNetForImageClassification"]

    reloaded, reloaded_processor = load_classifier(str(tmp_path))
    assert isinstance(reloaded.config, CifarResNetConfig) and reloaded.config.hidden_sizes == [8, 16, 16, 32]
    pixels = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(reloaded.eval()(pixels).logits, model(pixels).logits, rtol=0, atol=0)
    assert reloaded.config.id2label[3] == "cat"
    assert type(reloaded_processor).__name__ == "ViTImageProcessor"


# The subprocess starts a fresh interpreter: the Auto classes know the model only once `pipelines` is imported.
PIPELINE_PROGRAM = """
import json, sys
import numpy as np
from PIL import Image
from transformers import AutoConfig, pipeline

folder = sys.argv[1]
try:
    AutoConfig.from_pretrained(folder)
    known_before = True
except ValueError:
    known_before = False
import pipelines  # registers cifar_resnet with the Auto classes
classify = pipeline("image-classification", model=folder, trust_remote_code=False, device="cpu")
image = Image.fromarray(np.load(sys.argv[2]))
print(json.dumps({"known_before": known_before, "predictions": classify(image, top_k=3)}))
"""


@pytest.mark.slow
def test_transformers_pipeline_loads_the_saved_model_once_pipelines_is_imported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, processor = build_classifier(TINY_CIFAR_RESNET, CIFAR_CLASSES, image_processor_config=PROCESSOR_32)
    model.eval().save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)

    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_PROGRAM, str(tmp_path / "model"), str(tmp_path / "image.npy")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["known_before"] is False  # without the import, transformers does not know cifar_resnet

    # The pipeline's probabilities are the model's own on the project's device preprocessing of the same image.
    pixels = DevicePreprocess(processor, augment=False)(torch.from_numpy(image).permute(2, 0, 1)[None])
    with torch.no_grad():
        probabilities = model(pixels).logits.softmax(-1)[0]
    top = probabilities.topk(3)
    assert [entry["label"] for entry in answer["predictions"]] == [CIFAR_CLASSES[i] for i in top.indices.tolist()]
    scores = [entry["score"] for entry in answer["predictions"]]
    assert scores == pytest.approx(top.values.tolist(), abs=1e-5)


def test_distillation_trains_a_cifar_resnet_student_from_a_cifar_resnet_teacher(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "breastmnist.npz", counts=(24, 8, 8))
    data_args = DataArguments(dataset_name="breastmnist", data_dir=str(tmp_path), verify_md5=False)
    data = load_image_dataset(data_args)
    torch.manual_seed(0)
    teacher, teacher_processor = build_classifier(
        {**TINY_CIFAR_RESNET, "hidden_sizes": [16, 16, 32, 32]}, data.label_names, image_processor_config=PROCESSOR_32
    )
    teacher_before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    student, processor = build_classifier(TINY_CIFAR_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    student_before = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        report_to="none",
        max_steps=3,
        per_device_train_batch_size=8,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
    )
    trainer = build_trainer(
        DistillationTrainer,
        student,
        processor,
        args,
        data,
        data_args,
        TeacherLogitsCollator,
        teacher=teacher,
        teacher_processor=teacher_processor,
        distillation_args=DistillationArguments("runs/teacher", cache_teacher_logits=False),
    )
    trainer.train()
    assert trainer.state.global_step == 3
    assert all(np.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)
    for name, tensor in trainer.teacher.state_dict().items():
        assert torch.equal(tensor, teacher_before[name]), name  # frozen, batch-norm statistics included
    changed = [
        name for name, tensor in trainer.model.state_dict().items() if not torch.equal(tensor, student_before[name])
    ]
    assert "classifier.1.weight" in changed and "resnet.stages.3.0.conv1.0.weight" in changed
