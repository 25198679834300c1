"""The figures `python -m explain` draws, and index.json, which says what each file shows: overlay.png (the main
method's maps over the inputs), methods.png (images by methods), models.png (images by models, with a second model)
and misclassified.png (the split's most confidently misclassified images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from explain.explainer import Explainer
from explain.explanation import Explanation
from explain.inputs import Inputs, LabelledSplit, true_texts
from explain.plots import (
    MisclassifiedPanels,
    display_images,
    misclassified_figure,
    overlay_figure,
    panel_grid,
    resize_maps,
)
from explain.registry import class_agnostic, default_method, method_title
from pipelines.io import atomic_save_figure, atomic_write_json
from pipelines.labels import label_text, predicted_classes

logger = logging.getLogger(__name__)

AGNOSTIC_NOTE = "class-agnostic: the same map for every class"


def short_names(names: Sequence[str], width: int = 24) -> list[str]:
    """Names short enough to caption a panel: the fewest trailing path parts that still tell the images apart
    (``a/x.png`` and ``b/x.png``, not ``x.png`` twice), cut to their last `width` characters."""
    parts = [Path(name).parts or (name,) for name in names]
    for depth in range(1, max((len(part) for part in parts), default=1) + 1):
        shown = [str(Path(*part[-depth:])) for part in parts]
        if len(set(shown)) == len(set(names)):
            break
    return [name if len(name) <= width else "…" + name[-(width - 1) :] for name in shown]


def short_list(text: str, limit: int = 2) -> str:
    """A comma-separated label list cut to `limit` names (``"+3 more"``); the figures wrap it to fit a cell."""
    names = text.split(", ")
    return ", ".join(names[:limit]) + (f" +{len(names) - limit} more" if len(names) > limit else "")


def set_and_map(predicted_set: str, caption: str, key: str = "map") -> str:
    """A multi-label prediction in a caption: the predicted set shortened, then the label the map explains."""
    return f"{short_list(predicted_set)}\n{key}: {caption}"


def row_labels(inputs: Inputs) -> list[str]:
    """Each image's short name (see `short_names`), with its true label (set, shortened) when it is known."""
    names = short_names(inputs.names)
    truths = true_texts(inputs)
    if truths is None:
        return names
    if inputs.labels.ndim > 1:
        truths = [short_list(text) for text in truths]
    return [f"{name}\ntrue: {true}" for name, true in zip(names, truths)]


def with_class(
    rows: Sequence[str],
    captions: Sequence[str],
    target: int | None,
    agnostic: bool,
    predicted_sets: Sequence[str] | None = None,
) -> list[str]:
    """Each row label followed by the class whose score the caption gives: the prediction, the class explained,
    or, under a class-agnostic map, only the target (the map does not explain it).

    For a multi-label model (`predicted_sets` given) the prediction is the set of labels, as misclassified.png
    shows it, and the caption names the one label the map explains (or, class-agnostic, the top-scoring one).
    """
    key = "pred" if target is None else "target" if agnostic else "map"
    if predicted_sets is None:
        return [f"{row}\n{key}: {caption}" for row, caption in zip(rows, captions)]
    key = ("top" if agnostic else "map") if key == "pred" else key
    return [
        f"{row}\npred: {set_and_map(predicted, caption, key)}"
        for row, caption, predicted in zip(rows, captions, predicted_sets)
    ]


def explained_class(label_names: Sequence[str], target: int | None) -> str:
    """What the class-specific maps explain, in words: ``predicted class`` or ``class malignant``."""
    return "predicted class" if target is None else f"class {label_text(target, label_names)}"


def methods_shown(methods: Sequence[str], explained: str) -> tuple[str, str]:
    """How methods.png describes its maps: (figure title note, index.json note), naming the class-agnostic ones."""
    agnostic = [method for method in methods if class_agnostic(method)]
    if not agnostic:
        return explained, f"maps for the {explained}"
    if len(agnostic) == len(methods):
        return "class-agnostic", f"all {AGNOSTIC_NOTE}"
    return (
        f"{explained}; class-agnostic columns marked",
        f"maps for the {explained}, except {', '.join(agnostic)} ({AGNOSTIC_NOTE})",
    )


def image_entries(
    explainer: Explainer, inputs: Inputs, first: Explanation, target: int | None, predicted_sets: list[str] | None
) -> list[dict[str, Any]]:
    """index.json's row for each input: its name, true label (when known), and the model's prediction (or the class
    explained, with `target`) with its probability."""
    truths = true_texts(inputs)
    key = "predicted" if target is None else "explained"
    rows = []
    for row, name in enumerate(inputs.names):
        entry: dict[str, Any] = {"row": row, "image": name}
        if truths is not None:
            entry["true"] = truths[row]
        predicted_set = predicted_sets[row] if predicted_sets is not None else None
        rows.append({**entry, **explainer.prediction(first, row, key, predicted_set)})
    return rows


@dataclass
class Figures:
    """Draws the figures into `out` and keeps index.json's entries: what each file shows.

    Attributes:
        out: The folder.
        target: The class every map explains; None: each image's predicted class.
        edges: Outline the images' edges over the maps.
        index: index.json as far as it is drawn: a header (model, inputs, methods, precision, images), then
            ``files``, one entry per PNG.
    """

    out: Path
    target: int | None
    edges: bool
    index: dict[str, Any] = field(default_factory=dict)

    def save(self, name: str, figure: Any, shows: str, **details: Any) -> None:
        atomic_save_figure(figure, self.out / name)
        self.index.setdefault("files", []).append({"file": name, "shows": shows, **details})

    def write_index(self) -> dict[str, Any]:
        atomic_write_json(self.out / "index.json", self.index)
        return self.index

    def methods(
        self, explainer: Explainer, inputs: Inputs, explanations: dict[str, Explanation], predicted_sets: list | None
    ) -> None:
        """overlay.png (the main method's maps over the inputs) and methods.png (images by methods)."""
        methods = list(explanations)
        size = self.size(explanations)
        shown = display_images(inputs.images, size)
        explained = explained_class(explainer.label_names, self.target)
        main = default_method(explainer.model)
        main = main if main in explanations else methods[0]
        captions = [explainer.caption(explanations[main], row) for row in range(len(inputs.names))]
        main_agnostic = class_agnostic(main)
        labels = with_class(row_labels(inputs), captions, self.target, main_agnostic, predicted_sets)
        if main_agnostic:  # its map is the same for every class: saying which class it explains would mislead
            title, shows = (
                f"{main} on {explainer.title} ({AGNOSTIC_NOTE})",
                "its class-agnostic map (the same for every class)",
            )
        else:
            title, shows = f"{main} on {explainer.title} ({explained})", f"its map for the {explained}"
        figure = overlay_figure(shown, explanations[main].maps.numpy(), labels, title, self.edges)
        self.save("overlay.png", figure, f"{main} overlays: each input above {shows}")

        title_note, shows = methods_shown(methods, explained)
        panels = {
            method + ("\n(class-agnostic)" if class_agnostic(method) else ""): resize_maps(explanation.maps, size)
            for method, explanation in explanations.items()
        }
        title = f"Methods on {explainer.title} ({title_note})"
        figure = panel_grid(shown, panels, labels, title=title, edges=self.edges)
        self.save("methods.png", figure, f"images (rows) by methods (columns): {', '.join(methods)}; {shows}")

    @staticmethod
    def size(explanations: dict[str, Explanation]) -> tuple[int, int]:
        """The size every panel is drawn at: the first method's maps' (the first model's input size)."""
        return tuple(next(iter(explanations.values())).maps.shape[-2:])

    def models(self, explainer: Explainer, other: Explainer, inputs: Inputs, size: tuple[int, int]) -> None:
        """models.png: both models' maps by their default method (Grad-CAM, or for two vision transformers the
        method chosen for them) on the same images, side by side; each map scaled to 0-1 on its own."""
        method = default_method(explainer.model, other.model)
        panels, captions, predictions = {}, {}, {}
        key = "predicted" if self.target is None else "explained"
        for model in (explainer, other):
            explanation = model.explain(method, inputs.images, self.target)
            title = f"{model.title} ({model.model.config.model_type})"
            panels[title] = resize_maps(explanation.maps, size)
            captions[title] = [model.caption(explanation, row) for row in range(len(inputs.names))]
            sets = model.predicted_sets(inputs.images) or [None] * len(inputs.names)
            predictions[model.name] = [model.prediction(explanation, row, key, sets[row]) for row in range(len(sets))]
            if model.multi_label:
                captions[title] = [f"pred: {set_and_map(*pair)}" for pair in zip(sets, captions[title])]
        explained = explained_class(explainer.label_names, self.target)
        # Each map is min-max scaled to 0-1 on its own (`explain.explanation.scale_to_unit`): one colour bar, not
        # one scale.
        title = f"{method_title(method)} by model ({explained}; each map scaled to 0-1)"
        shown = display_images(inputs.images, size)
        figure = panel_grid(shown, panels, row_labels(inputs), captions, title, self.edges)
        shows = (
            f"images (rows) by models (columns): {method_title(method)} of each model ({explained}), each map scaled "
            "to 0-1, "
            "one colour bar"
        )
        self.save("models.png", figure, shows, predictions=predictions)

    def misclassified(
        self, explainer: Explainer, split: LabelledSplit, count: int, batch_size: int, size: tuple[int, int]
    ) -> None:
        """misclassified.png: the split's `count` most confidently misclassified images, with the model's default
        method's maps for the predicted and the true class (none, and no figure, when no image is misclassified)."""
        method = default_method(explainer.model)
        title = method_title(method)
        logits = explainer.predict(split.rows, split.collator, batch_size)
        labels = split.labels()
        if split.multi_label:
            wrong = (predicted_classes(logits, multi_label=True) != labels.long()).any(dim=1)
            confidence = logits.sigmoid().amax(dim=1)
        else:
            labels = labels.reshape(-1)
            wrong = logits.argmax(dim=1) != labels
            confidence = logits.softmax(dim=1).amax(dim=1)
        self.index["misclassified"] = {"count": int(wrong.sum()), "of": len(labels)}
        candidates = torch.nonzero(wrong).flatten()
        if candidates.numel() == 0:  # no figure, so no entry in index["files"]: every entry there names a file
            logger.warning("No image of the %s split is misclassified: misclassified.png is not drawn.", split.name)
            return
        order = candidates[confidence[candidates].argsort(descending=True)][:count].tolist()
        inputs = split.take(order)
        predicted = explainer.explain(method, inputs.images)
        true_maps, note = None, ""
        true_text = true_texts(inputs)
        predicted_sets = None
        if split.multi_label:  # from the logits that found them misclassified, so each set differs from its true one
            decided = predicted_classes(logits[order], multi_label=True)
            predicted_sets = [label_text(row, split.label_names) for row in decided]
        else:
            true_maps = resize_maps(explainer.explain(method, inputs.images, inputs.labels).maps, size)
            if not true_maps.any():
                # Typical of two-class models, whose two logits' gradients are near opposites: a column of blank
                # panels would say nothing, so the title says it once.
                true_maps, note = None, f"\n{title} finds no positive evidence for the true class in any of them"
        predicted_text = [explainer.caption(predicted, row) for row in range(len(order))]
        shown_true, shown_predicted = true_text, predicted_text
        if split.multi_label:  # label sets, shortened to fit beside the image; the map explains the top label
            shown_true = [short_list(text) for text in true_text]
            shown_predicted = [set_and_map(*pair) for pair in zip(predicted_sets, predicted_text)]
        maps_title = f"{title}: top-scoring label" if split.multi_label else f"{title}: predicted class"
        figure = misclassified_figure(
            MisclassifiedPanels(
                display_images(inputs.images, size),
                resize_maps(predicted.maps, size),
                true_maps,
                shown_true,
                shown_predicted,
                inputs.names,
            ),
            f"Misclassified {split.name} images ({int(wrong.sum())} of {len(labels)}), most confident first{note}",
            self.edges,
            maps_title,
        )
        shows = (
            "misclassified images (rows), most confident first: input with true and predicted labels, "
            + (f"{title} for the top-scoring label" if split.multi_label else f"{title} for the predicted class")
            + (" and for the true class" if true_maps is not None else "")
            + (f" (none for the true class: {title} finds no positive evidence for it)" if note else "")
        )
        images = [
            {"image": name, "true": true, **explainer.prediction(predicted, row, predicted_set=predicted_set)}
            for row, (name, true, predicted_set) in enumerate(
                zip(inputs.names, true_text, predicted_sets or [None] * len(order))
            )
        ]
        self.save("misclassified.png", figure, shows, images=images)
