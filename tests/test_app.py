"""The explorer (explain/explorer.py, served by scripts/app.py): its functions on tiny random models, the served page
driven by gradio_client, and the page in a headless Chromium."""

from __future__ import annotations

import io
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio", reason="the explorer needs the app extra: pip install -e '.[app]'")

from matplotlib import colormaps  # noqa: E402
from transformers import BertConfig  # noqa: E402

import explain.explorer as explorer_module  # noqa: E402
from explain.explorer import (  # noqa: E402
    MAP_EXPLAINED,
    NO_CORRUPTION,
    PREDICTED,
    VIEWS,
    AppArguments,
    ImageSummary,
    Session,
    chosen_image,
    colour_key_html,
    command_line,
    gallery_items,
    gallery_order,
    is_share_safe,
    load_explainers,
    overlay,
    read_upload,
    start_session,
    top_probabilities,
    view_image,
)
from explain.metrics.agreement import blank_maps, rank_correlation, top_fraction_iou  # noqa: E402
from explain.plots import display_images  # noqa: E402
from pipelines import DataArguments  # noqa: E402
from pipelines.corruptions import corrupt, corruption_choices  # noqa: E402
from pipelines.errors import ConfigError, DataError  # noqa: E402
from pipelines.models import build_classifier  # noqa: E402

from helpers.data import make_medmnist_npz
from helpers.models import BREAST_LABELS, PROCESSOR_32, TINY_RESNET, TINY_VIT, save_classifier
from helpers.project import load_script


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    # Test labels drawn apart from the images' brightness, so that random models misclassify some of them.
    test_labels = np.random.default_rng(1).integers(0, 2, (16, 1)).astype(np.uint8)
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(8, 4, 16), test_labels=test_labels)
    multi_label, processor = build_classifier(
        TINY_RESNET, BREAST_LABELS, multi_label=True, image_processor_config=PROCESSOR_32
    )
    multi_label.save_pretrained(root / "multi")
    processor.save_pretrained(root / "multi")
    text_model = root / "bert"
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(
        text_model
    )
    (text_model / "model.safetensors").write_bytes(b"")
    return {
        "data": str(root / "data"),
        "resnet": save_classifier(root / "resnet", TINY_RESNET),
        "vit": save_classifier(root / "vit", TINY_VIT),
        "three_labels": save_classifier(root / "three", TINY_RESNET, ["a", "b", "c"]),
        "text_model": str(text_model),
        "multi_label": str(root / "multi"),
    }


def _data(models: dict[str, str]) -> DataArguments:
    return DataArguments(dataset_name="breastmnist", data_dir=models["data"], verify_md5=False)


@pytest.fixture(scope="module")
def session(models: dict[str, str]) -> Session:
    args = AppArguments(models=[models["resnet"], models["vit"]], explain_images=12, device="cpu")
    return start_session(args, _data(models))


def test_views_filter_and_sort_the_gallery() -> None:
    summaries = [
        ImageSummary(0, 0, [0, 0], 0.9),  # right, agreed
        ImageSummary(1, 1, [0, 0], 0.2),  # both wrong
        ImageSummary(2, 0, [0, 1], float("nan")),  # the student wrong, a blank map
        ImageSummary(3, 1, [1, 1], -0.5),
    ]
    assert gallery_order(summaries, VIEWS[0]) == [0, 1, 2, 3]
    assert gallery_order(summaries, "misclassified by any model") == [1, 2]
    assert gallery_order(summaries, "models disagree") == [2]
    assert gallery_order(summaries, "lowest map agreement first") == [3, 1, 0, 2]
    with pytest.raises(ConfigError, match="Unknown view 'best'"):
        gallery_order(summaries, "best")


def test_the_forgotten_view_lists_negative_flips_first_most_confident_first() -> None:
    summaries = [
        ImageSummary(0, 0, [0, 0, 0], 0.9, 0.99),  # everyone right
        ImageSummary(1, 1, [1, 0, 1], 0.2, 0.70),  # forgotten by model 1
        ImageSummary(2, 0, [1, 0, 0], 0.5, 0.80),  # the reference wrong, learnt by models 1 and 2
        ImageSummary(3, 1, [1, 1, 0], 0.4, 0.95),  # forgotten by model 2
    ]
    assert [summary.forgotten_by for summary in summaries] == [[], [1], [], [2]]
    assert [summary.learnt_by for summary in summaries] == [[], [], [1, 2], []]
    assert gallery_order(summaries, "forgotten by a model first") == [3, 1, 0, 2]


def test_gallery_captions_name_each_flip_and_the_forgotten_view_lists_them_first(session: Session) -> None:
    explorer = session.explorer
    order = gallery_order(explorer.summaries, "forgotten by a model first")
    assert sorted(order) == list(range(len(explorer.summaries)))
    captions = [caption for _, caption in gallery_items(explorer, order)]
    titles = [explainer.title for explainer in explorer.explainers]
    for index, caption in zip(order, captions):
        summary = explorer.summaries[index]
        assert ("forgotten by " + titles[1] in caption) == (summary.forgotten_by == [1])
        assert ("learnt by " + titles[1] in caption) == (summary.learnt_by == [1])
    forgotten = [index for index in order if explorer.summaries[index].forgotten_by]
    assert order[: len(forgotten)] == forgotten
    confidences = [explorer.summaries[index].confidence for index in forgotten]
    assert confidences == sorted(confidences, reverse=True)


def test_summaries_hold_each_models_prediction_and_the_lowest_agreement(session: Session) -> None:
    explorer = session.explorer
    assert len(explorer.summaries) == 12
    teacher, student = explorer.explainers
    predicted = [explainer.predict_batch(explorer.images).argmax(dim=1) for explainer in (teacher, student)]
    assert [s.predicted for s in explorer.summaries] == torch.stack(predicted, dim=1).tolist()
    assert [s.true for s in explorer.summaries] == explorer.labels.tolist()
    assert any(s.misclassified for s in explorer.summaries)  # random models on labels unrelated to the images
    for row, summary in enumerate(explorer.summaries):
        image, target = explorer.images[row : row + 1], predicted[0][row : row + 1]
        maps = [explainer.explain("gradcam", image, target).maps for explainer in (teacher, student)]
        if bool(blank_maps(maps[0]) | blank_maps(maps[1])):  # no ranking: left out of the order's figures
            assert np.isnan(summary.agreement)
        else:
            assert summary.agreement == pytest.approx(float(rank_correlation(*maps)[0]), abs=1e-4)  # batch of 12 vs 1
    assert not all(np.isnan(summary.agreement) for summary in explorer.summaries)


def test_top_probabilities_are_the_largest_softmax_values_in_order(session: Session) -> None:
    explainer, image = session.explorer.explainers[0], session.explorer.images[0]
    expected = explainer.predict_batch(image[None]).softmax(dim=1)[0]
    top = top_probabilities(explainer, image, k=5)  # more than the two classes: both, no error
    assert list(top) == [BREAST_LABELS[int(i)] for i in expected.argsort(descending=True)]
    assert list(top.values()) == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-4)
    assert list(top_probabilities(explainer, image, k=1)) == [BREAST_LABELS[int(expected.argmax())]]


def test_opacity_blends_the_image_and_the_colour_map(session: Session) -> None:
    image = session.explorer.images[0]
    heatmap = torch.linspace(0, 1, 4 * 4).reshape(1, 4, 4)
    shown = display_images([image], (224, 224))[0]
    assert overlay(image, heatmap, 0.0).shape == (224, 224, 3)
    assert np.array_equal(overlay(image, heatmap, 0.0), np.repeat(shown, 3, axis=2))
    corner = np.round(colormaps["jet"](0.0)[:3] * np.array(255.0)).astype(np.uint8)
    assert np.array_equal(overlay(image, heatmap, 1.0)[0, 0], corner)  # the map's lowest value, fully opaque


def test_the_chosen_class_method_and_agreement_of_one_image(session: Session) -> None:
    explorer = session.explorer
    image = explorer.images[2]
    teacher, student = explorer.explainers
    views = {name: view_image(explorer, image, "gradcam", name, 1.0) for name in BREAST_LABELS}
    assert not np.array_equal(views[BREAST_LABELS[0]].overlays[0], views[BREAST_LABELS[1]].overlays[0])
    first_class = BREAST_LABELS[int(teacher.predict_batch(image[None]).argmax())]
    predicted = view_image(explorer, image, "gradcam", PREDICTED, 1.0)
    assert np.array_equal(predicted.overlays[1], views[first_class].overlays[1])  # one class for every model
    target = torch.tensor([BREAST_LABELS.index(first_class)])
    maps = [explainer.explain("gradcam", image[None], target).maps for explainer in (teacher, student)]
    row = next(line for line in predicted.agreement.splitlines() if line.startswith("| vit |"))
    if "n/a" not in row:  # a blank map has no rank correlation
        assert f"{float(rank_correlation(*maps)[0]):.3f} | {float(top_fraction_iou(*maps)[0]):.3f}" in row
    assert predicted.agreement.count("\n| vit |") == 1
    assert predicted.blank == [bool(blank_maps(model_maps)[0]) for model_maps in maps]
    assert ("No evidence for this class (blank map)" in predicted.agreement) == any(predicted.blank)
    assert "class-agnostic" in view_image(explorer, image, "eigencam", PREDICTED, 0.5).agreement
    with pytest.raises(ConfigError, match="not offered"):
        view_image(explorer, image, "guided_backprop", PREDICTED, 0.5)
    with pytest.raises(ConfigError, match="Unknown class 'benign'"):
        view_image(explorer, image, "gradcam", "benign", 0.5)


def test_a_corruption_reruns_every_model_on_the_same_corrupted_image(session: Session) -> None:
    explorer = session.explorer
    assert explorer.corruption_dataset == "breastmnist"
    assert explorer.corruptions == corruption_choices("breastmnist", 1)  # BreastMNIST's own list first
    assert "saturate" not in explorer.corruptions  # grey images
    image, row = explorer.images[5], 5
    corrupted = corrupt(image[None], "brightness_down", 4, "breastmnist", seed=0, rows=[row])[0]
    view = view_image(explorer, image, "gradcam", PREDICTED, 1.0, "brightness_down", 4, row)
    assert view.probabilities == [top_probabilities(e, corrupted, explorer.top_k) for e in explorer.explainers]
    assert np.array_equal(view.image, np.repeat(display_images([corrupted], (224, 224))[0], 3, axis=2))
    by_hand = view_image(explorer, corrupted, "gradcam", PREDICTED, 1.0)  # the corrupted image, given as it is
    assert all(np.array_equal(ours, theirs) for ours, theirs in zip(view.overlays, by_hand.overlays))
    assert "brightness_down at severity 4 (factor 0.4, MedMNIST-C's for breastmnist)" in view.agreement
    clean = view_image(explorer, image, "gradcam", PREDICTED, 1.0, NO_CORRUPTION, 4, row)
    assert np.array_equal(clean.image, np.repeat(display_images([image], (224, 224))[0], 3, axis=2))
    assert "severity" not in clean.agreement
    noisy = [view_image(explorer, image, "gradcam", PREDICTED, 1.0, "speckle_noise", 3, r).image for r in (5, 6)]
    assert not np.array_equal(*noisy)  # an image's noise is seeded by its index in the split
    for corruption, severity, message in [
        ("fog", 3, "Unknown corruption 'fog'"),
        ("saturate", 3, "Corruption 'saturate' changes colour and these images are grey"),
        ("pixelate", 0, "Severity 0 is outside 1-5"),
        ("pixelate", 6, "Severity 6 is outside 1-5"),
    ]:
        with pytest.raises(ConfigError, match=message):
            view_image(explorer, image, "gradcam", PREDICTED, 0.5, corruption, severity, row)


def test_bad_models_are_refused_with_one_sentence(models: dict[str, str], session: Session) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(DataError, match="'bert' model, which transformers cannot load as an image classifier"):
        load_explainers([models["resnet"], models["text_model"]], cpu, torch.float32)
    with pytest.raises(ConfigError, match=r"three has labels \['a', 'b', 'c'\] but resnet has"):
        load_explainers([models["resnet"], models["three_labels"]], cpu, torch.float32)
    with pytest.raises(ConfigError, match="multi is a multi-label model"):
        load_explainers([models["multi_label"]], cpu, torch.float32)
    current = session.explorer
    with pytest.raises(DataError, match="does not exist"):
        session.load([str(Path(models["resnet"]).parent / "nowhere")])
    assert session.explorer is current  # the page keeps the models it had


def test_a_bad_index_or_no_image(session: Session) -> None:
    with pytest.raises(ConfigError, match="not in the split; use 0 to 11"):
        chosen_image(session.explorer, 12, None)
    with pytest.raises(ConfigError, match="No image chosen"):
        chosen_image(session.explorer, None, None)


def test_the_script_refuses_bad_models_before_serving(models: dict[str, str]) -> None:
    script = load_script("app")
    data = ["--dataset_name", "breastmnist", "--data_dir", models["data"], "--verify_md5", "false"]
    with pytest.raises(ConfigError, match="same labels"):
        script.main(["--models", models["resnet"], models["three_labels"], *data])


def test_a_space_reads_its_command_line_from_a_variable() -> None:
    given = ["--models", "a", "--dataset_name", "breastmnist"]
    assert command_line(given, {"EXPLORER_ARGS": "--models b"}) == given  # arguments win
    space = {"EXPLORER_ARGS": "--models user/teacher user/student --dataset_name pneumoniamnist"}
    expected = ["--models", "user/teacher", "user/student", "--dataset_name", "pneumoniamnist", "--host", "0.0.0.0"]
    assert command_line([], space) == expected
    assert command_line([], {**space, "GRADIO_SERVER_NAME": "10.0.0.2"})[-1] == "10.0.0.2"
    with pytest.raises(ConfigError, match="set EXPLORER_ARGS"):
        command_line([], {})


def _png(pixels: np.ndarray) -> bytes:
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return encoded.getvalue()


def test_an_upload_is_refused_with_its_reason_and_no_server_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = _png(np.full((40, 30), 128, np.uint8))
    dicom = bytes(128) + b"DICM" + bytes(64)
    cases = {
        "empty.png": (b"", "The uploaded file empty.png is empty (0 bytes); upload the image again."),
        "notes.png": (
            b"not an image",
            "The uploaded file notes.png is not an image the explorer can read; upload a PNG, JPEG, TIFF or BMP file.",
        ),
        "chest.dcm": (dicom, "The uploaded file chest.dcm is a DICOM file, which the explorer does not read; export "),
        "cut.png": (scan[: len(scan) // 2], "The uploaded image cut.png is damaged or cut short (OSError: "),
    }
    for name, (data, message) in cases.items():
        upload = tmp_path / name
        upload.write_bytes(data)
        with pytest.raises(DataError) as refused:
            read_upload(str(upload), 3)
        assert str(refused.value).startswith(message)
        assert str(tmp_path) not in str(refused.value) and "BytesIO" not in str(refused.value)
    large = tmp_path / "large.png"
    large.write_bytes(scan)
    monkeypatch.setattr(explorer_module, "MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(DataError, match=r"large.png \(30 x 40 pixels\) is larger than the explorer takes \(0.001 mega"):
        read_upload(str(large), 3)


def test_a_16_bit_greyscale_upload_is_scaled_from_its_own_range_to_8_bits(tmp_path: Path) -> None:
    # A 12-bit export in a 16-bit PNG, as clinical software writes it: values 1000..4060.
    pixels = (np.arange(4 * 8, dtype=np.uint16).reshape(4, 8) * 99 + 1000).astype(np.uint16)
    upload = tmp_path / "xray16.png"
    upload.write_bytes(_png(pixels))
    assert Image.open(upload).mode == "I;16"
    expected = np.round((pixels - 1000.0) / (pixels.max() - 1000.0) * 255).astype(np.uint8)
    grey, note = read_upload(str(upload), 1)
    assert grey.dtype == torch.uint8 and grey.shape == (1, 4, 8)
    assert np.array_equal(grey[0].numpy(), expected)
    assert note == (
        "xray16.png has 16-bit pixels (values 1000 to 4069); the explorer scaled that range to 0-255, as the models "
        "were trained on 8-bit images."
    )
    rgb, _ = read_upload(str(upload), 3)
    assert rgb.shape == (3, 4, 8) and all(np.array_equal(channel.numpy(), expected) for channel in rgb)
    eight = tmp_path / "xray8.png"
    eight.write_bytes(_png(expected))
    assert read_upload(str(eight), 1)[1] == ""  # 8-bit images as they are, with nothing to say


def test_each_model_is_named_on_its_prediction_its_map_and_in_the_gallery(session: Session) -> None:
    explorer = session.explorer
    image = explorer.images[3]
    view = view_image(explorer, image, "gradcam", BREAST_LABELS[1], 0.5)
    for explainer, title, top in zip(explorer.explainers, view.prediction_titles, view.probabilities):
        predicted = BREAST_LABELS[int(explainer.predict_batch(image[None]).argmax())]
        assert title == f"{explainer.title}: {predicted} {top[predicted]:.2f}"
    assert [title.removesuffix(" (blank)") for title in view.map_titles] == [
        f"{explainer.title}: gradcam map of {BREAST_LABELS[1]}" for explainer in explorer.explainers
    ]
    summary = explorer.summaries[3]
    caption = gallery_items(explorer, [3])[0][1]
    named = f"resnet: {BREAST_LABELS[summary.predicted[0]]}, vit: {BREAST_LABELS[summary.predicted[1]]}"
    assert caption.startswith(f"#3 true: {BREAST_LABELS[summary.true]} | {named}")
    assert "pred:" not in caption


def test_the_colour_key_runs_through_the_overlays_colour_map() -> None:
    key = colour_key_html(steps=3)
    stops = [
        "#{:02x}{:02x}{:02x}".format(*np.round(np.array(colormaps["jet"](v)[:3]) * 255).astype(int))
        for v in (0.0, 0.5, 1.0)
    ]
    assert f"linear-gradient(to right, {', '.join(stops)})" in key
    assert "0: least" in key and "1: most" in key
    assert "Research use only, not for diagnosis" in MAP_EXPLAINED


def test_the_explorer_computes_in_the_shared_default_precision() -> None:
    assert AppArguments(models=["a"]).precision == "auto"


def test_share_safe_is_on_when_served_publicly_unless_said() -> None:
    assert not is_share_safe(None, "127.0.0.1", {}) and not is_share_safe(None, "localhost", {})
    assert is_share_safe(None, "0.0.0.0", {}) and is_share_safe(None, "10.0.0.2", {})
    assert is_share_safe(None, "127.0.0.1", {"SPACE_ID": "user/explorer"})  # on a Space
    assert is_share_safe(True, "127.0.0.1", {}) and not is_share_safe(False, "0.0.0.0", {})


def test_a_share_safe_session_loads_only_its_own_models(models: dict[str, str], session: Session) -> None:
    shared = Session(session.explorer, session.device, session.dtype, "suggested", share_safe=True)
    assert shared.names_shown() == ["resnet", "vit"]  # titles: no server path in the page
    for other in (models["three_labels"], "someone/any-model", "/etc"):
        with pytest.raises(ConfigError) as refused:
            shared.load([other])
        assert str(refused.value) == (
            f"This shared explorer loads only the models it was started with (resnet, vit), not {other}."
        )
    swapped = shared.load(["vit", models["resnet"]])  # by title or by the name given at start
    assert swapped.explainers == session.explorer.explainers[::-1]  # the same objects: nothing loaded again
    assert shared.load(["vit", "resnet"]) is swapped  # summarised once for every visitor who asks
    assert shared.explorer is session.explorer  # what other visitors see is unchanged


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(session: Session):
    """The page served on 127.0.0.1 in a thread of this process; yields its URL."""
    app, url = _serve(session)
    yield url
    app.close()


def test_the_served_page_answers_a_client_and_survives_bad_input(
    server: str, session: Session, models: dict[str, str], tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    items, note = client.predict("misclassified by any model", api_name="/gallery")
    expected = gallery_order(session.explorer.summaries, "misclassified by any model")
    assert [item["caption"].split()[0] for item in items] == [f"#{index}" for index in expected]
    assert note.startswith(f"{len(expected)} of 12 images")

    result = client.predict(expected[0], None, "gradcam", PREDICTED, 0.5, api_name="/explain")
    image = session.explorer.images[expected[0]]
    for slot, explainer in enumerate(session.explorer.explainers):
        assert _top(result, slot) == pytest.approx(top_probabilities(explainer, image, 3), abs=1e-4)
        assert result[slot]["label"].startswith(f"{explainer.title}: ")  # named on its prediction and its map
        assert result[4 + slot]["label"].startswith(f"{explainer.title}: gradcam map of ")
    assert not result[2] and result[6] is None  # two models: two of the four columns filled
    assert Path(_value(result[4])).is_file() and Path(_value(result[5])).is_file() and result[-1] == ""

    broken = tmp_path / "scan.png"
    broken.write_text("not an image")
    result = client.predict(None, handle_file(str(broken)), "gradcam", PREDICTED, 0.5, api_name="/explain")
    assert result[-1] == (
        "**Error:** The uploaded file scan.png is not an image the explorer can read; upload a PNG, JPEG, TIFF or "
        "BMP file."
    )
    result = client.predict(f"{models['resnet']}\n{models['three_labels']}", api_name="/load_models")
    assert "three has labels ['a', 'b', 'c'] but resnet has" in result[-1]
    result = client.predict(models["text_model"], api_name="/load_models")
    assert "cannot load as an image classifier" in result[-1]
    # Still serving, with the models it had.
    result = client.predict(0, None, "layercam", BREAST_LABELS[1], 0.3, api_name="/explain")
    assert result[-1] == "" and Path(_value(result[4])).is_file()
    # A corruption and severity: the models run again on the corrupted image, which the page shows.
    result = client.predict(expected[0], None, "gradcam", PREDICTED, 0.5, "pixelate", 5, api_name="/explain")
    assert result[-1] == "" and Path(result[8]).is_file() and "pixelate at severity 5" in result[-2]
    # The page's own components refuse what their choices and bounds leave out (view_image's sentences, tested
    # above, are for other callers), and the page goes on serving.
    with pytest.raises(AppError, match="Value 0 is less than minimum value 1"):
        client.predict(expected[0], None, "gradcam", PREDICTED, 0.5, "pixelate", 0, api_name="/explain")
    with pytest.raises(AppError, match="Value: fog is not in the list of choices"):
        client.predict(expected[0], None, "gradcam", PREDICTED, 0.5, "fog", 3, api_name="/explain")
    assert client.predict(0, None, "gradcam", PREDICTED, 0.5, "shot_noise", 2, api_name="/explain")[-1] == ""

    # The student first: it becomes the reference the gallery and the agreement table compare with, for this
    # client only (test_each_visitor_sees_the_models_they_loaded).
    result = client.predict(f"{models['vit']}\n{models['resnet']}", api_name="/load_models")
    assert result[-1] == "Loaded vit, resnet."
    result = client.predict(0, None, "gradcam", PREDICTED, 0.5, api_name="/explain")
    assert "rank correlation with vit" in result[-2]


def _value(output: object) -> object:
    """An output's value: the page returns each model's label and map as an update that names the model."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def _top(result: list, slot: int) -> dict[str, float] | None:
    label = _value(result[slot])
    return None if not label else {c["label"]: c["confidence"] for c in label["confidences"]}


def _serve(session: Session):
    page = load_script("app")
    app = page.build_app(session)
    port = _free_port()
    app.launch(prevent_thread_lock=True, quiet=True, **page.launch_options("127.0.0.1", port))
    return app, f"http://127.0.0.1:{port}/"


def test_each_visitor_sees_the_models_they_loaded(server: str, session: Session, models: dict[str, str]) -> None:
    from gradio_client import Client

    resnet, vit = session.explorer.explainers
    image = session.explorer.images[0]
    first, second, newcomer = (Client(server, verbose=False) for _ in range(3))
    assert first.predict(f"{models['vit']}\n{models['resnet']}", api_name="/load_models")[-1] == "Loaded vit, resnet."
    assert second.predict(models["resnet"], api_name="/load_models")[-1] == "Loaded resnet."
    mine, theirs, fresh = (
        client.predict(0, None, "gradcam", PREDICTED, 0.5, api_name="/explain") for client in (first, second, newcomer)
    )
    assert _top(mine, 0) == pytest.approx(top_probabilities(vit, image, 3), abs=1e-4)
    assert _top(mine, 1) == pytest.approx(top_probabilities(resnet, image, 3), abs=1e-4)
    assert "rank correlation with vit" in mine[-2]
    assert _top(theirs, 0) == pytest.approx(top_probabilities(resnet, image, 3), abs=1e-4) and _top(theirs, 1) is None
    assert theirs[-2].startswith("One model: no agreement to show.")
    assert _top(fresh, 0) == pytest.approx(top_probabilities(resnet, image, 3), abs=1e-4)  # the models given at start
    assert "rank correlation with resnet" in fresh[-2]
    items, _ = second.predict("all images", api_name="/gallery")
    assert "resnet: " in items[0]["caption"] and "vit: " not in items[0]["caption"]
    assert session.explorer.explainers == [resnet, vit]  # what a new visitor gets is unchanged


def test_a_share_safe_page_refuses_any_other_model_in_one_sentence(session: Session, models: dict[str, str]) -> None:
    from gradio_client import Client

    shared = Session(session.explorer, session.device, session.dtype, "suggested", share_safe=True)
    app, url = _serve(shared)
    try:
        client = Client(url, verbose=False)
        for other in (models["three_labels"], "someone/any-model"):
            result = client.predict(other, api_name="/load_models")
            assert result[-1] == (
                f"**Error:** This shared explorer loads only the models it was started with (resnet, vit), not {other}."
            )
        assert client.predict("vit", api_name="/load_models")[-1] == "Loaded vit."
        result = client.predict(0, None, "gradcam", PREDICTED, 0.5, api_name="/explain")
        assert result[-2].startswith("One model: no agreement to show.") and result[-1] == ""
    finally:
        app.close()


def _chromium_driver():
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_a_browser_picks_an_image_and_sees_the_overlay(server: str, tmp_path: Path) -> None:
    pytest.importorskip("selenium", reason="the browser test needs selenium (the app extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium_driver()
    try:
        browser.get(server)
        wait = WebDriverWait(browser, 30)
        thumbnail = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#gallery .thumbnail-item")))
        thumbnail.click()
        wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#overlay-0 img")))
        wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#overlay-1 img")))
        wait.until(lambda page: "rank correlation" in page.find_element(By.ID, "agreement").text)
        screenshot = tmp_path / "explorer.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [url for url in fetched if not url.startswith(server.rstrip("/")) and not url.startswith("data:")]
        assert fetched and outside == []  # nothing (font, script, analytics) from outside
    finally:
        browser.quit()


def test_the_page_opens_on_an_explained_image_with_a_colour_key_and_whole_captions(
    server: str, session: Session
) -> None:
    pytest.importorskip("selenium", reason="the browser test needs selenium (the app extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium_driver()
    try:
        browser.get(server)  # and nothing clicked
        wait = WebDriverWait(browser, 30)
        wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#overlay-0 img")))
        wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#overlay-1 img")))
        first = gallery_order(session.explorer.summaries, VIEWS[0])[0]
        wait.until(lambda page: f"#{first} true:" in page.find_element(By.ID, "chosen").text)
        text = browser.find_element(By.TAG_NAME, "body").text
        assert "Research use only, not for diagnosis." in text
        assert "resnet: gradcam map of" in text and "vit: gradcam map of" in text
        assert browser.find_element(By.ID, "colour-key-bar").size["width"] > 100
        captions = browser.find_elements(By.CSS_SELECTOR, "#gallery .caption-label, #gallery .caption")
        assert captions and all(
            browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", caption)
            for caption in captions
        )  # none cut off with an ellipsis
    finally:
        browser.quit()


def test_the_page_names_nothing_to_fetch_from_outside(server: str) -> None:
    page = urllib.request.urlopen(server, timeout=10).read().decode()
    assert "fonts.googleapis" not in page and "cdn.jsdelivr" not in page
