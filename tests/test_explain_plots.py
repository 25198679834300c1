"""Figures: layout, one fixed colour scale, labels, edge overlay; saved atomically as PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from medmnist import INFO
from PIL import Image as PILImage

from explain.plots import (
    CAPTION_CHARS,
    MisclassifiedPanels,
    blend_overlay,
    display_images,
    draw_overlay,
    edge_mask,
    misclassified_figure,
    overlay_figure,
    panel_grid,
    resize_maps,
)
from pipelines.io import atomic_save_figure

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
MAPS = RNG.random((3, 16, 16))


def map_images(figure: Figure) -> list:
    """The heat-map layers: images drawn with the jet colour map."""
    return [image for axis in figure.axes for image in axis.images if image.get_cmap().name == "jet"]


def test_overlay_figure_layout_and_scale(tmp_path) -> None:
    figure = overlay_figure(IMAGES, MAPS, ["a (0.90)", "b (0.80)", "c (0.70)"], "title")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 2 * 3 + 1  # inputs, overlays, colour bar
    assert [axis.get_title() for axis in figure.axes[:3]] == ["a (0.90)", "b (0.80)", "c (0.70)"]
    assert all(image.get_clim() == (0.0, 1.0) for image in map_images(figure))
    atomic_save_figure(figure, tmp_path / "overlay.png")
    with PILImage.open(tmp_path / "overlay.png") as saved:
        assert saved.format == "PNG" and saved.width > saved.height
    assert not list(tmp_path.glob(".*.tmp"))


def test_panel_grid_has_one_row_per_image_and_one_column_per_panel() -> None:
    panels = {"gradcam": MAPS, "layercam": MAPS[::-1], "eigencam": MAPS * 0.5}
    captions = {"layercam": ["x", "y", "z"]}
    figure = panel_grid(IMAGES, panels, ["test[0]", "test[1]", "test[2]"], captions, "grid")
    grid_axes = figure.axes[:-1]
    assert len(grid_axes) == 3 * 4
    assert [axis.get_title() for axis in grid_axes[:4]] == ["input", "gradcam", "layercam", "eigencam"]
    assert [grid_axes[row * 4].get_ylabel() for row in range(3)] == ["test[0]", "test[1]", "test[2]"]
    assert [grid_axes[row * 4 + 2].get_xlabel() for row in range(3)] == ["x", "y", "z"]
    layers = map_images(figure)
    assert len(layers) == 9 and all(layer.get_clim() == (0.0, 1.0) for layer in layers)  # the same colour scale


def test_misclassified_figure_names_true_and_predicted_labels() -> None:
    panels = MisclassifiedPanels(
        IMAGES[:2], MAPS[:2], np.zeros((2, 16, 16)), ["cat", "dog"], ["dog (0.9)", "cat (0.8)"], names=["a", "b"]
    )
    figure = misclassified_figure(panels)
    assert figure.axes[0].get_xlabel() == "true: cat\npred: dog (0.9)"
    assert figure.axes[0].get_ylabel() == "a" and figure.axes[3].get_ylabel() == "b"
    assert [axis.get_title() for axis in figure.axes[:3]] == [
        "input",
        "Grad-CAM: predicted class",
        "Grad-CAM: true class",
    ]
    # An all-zero map (no positive evidence) is said so in words rather than left as a blank panel.
    assert "no positive\nevidence" in [text.get_text() for text in figure.axes[2].texts]


def test_edge_overlay_outlines_the_image_structure() -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[4:12, 4:12] = 255
    edges = edge_mask(image)
    assert edges[4, 8] and edges[11, 8] and edges[8, 4]  # the square's border
    assert not edges[8, 8] and not edges[0, 0]  # not its inside, not the background
    figure = Figure()
    axis = figure.subplots()
    draw_overlay(axis, image, np.full((16, 16), 0.5), edges=True)
    assert len(axis.images) == 3  # image, map, edges
    assert not edge_mask(np.zeros((8, 8, 1), dtype=np.uint8)).any()


def test_display_images_resize_to_the_maps() -> None:
    images = [torch.zeros(1, 28, 28, dtype=torch.uint8), torch.full((3, 40, 30), 200, dtype=torch.uint8)]
    shown = display_images(images, (32, 32))
    assert shown.shape == (2, 32, 32, 3) and shown.dtype == np.uint8
    assert (shown[0] == 0).all() and (shown[1] == 200).all()
    shown = display_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), (32, 32))
    assert shown.shape == (2, 32, 32, 1) and shown.dtype == np.uint8
    assert resize_maps(torch.rand(2, 8, 8), (32, 32)).shape == (2, 32, 32)


def test_edges_of_an_upsampled_image_follow_its_outline_one_line_thin() -> None:
    # 28 px images shown at 224 px, as a MedMNIST image is under a ViT's map: bilinear upsampling leaves 8 px cells
    # of constant gradient, which the thinning alone turned into bands and dashes across the cells.
    yy, xx = np.mgrid[:28, :28]
    disc = np.where((yy - 13.5) ** 2 + (xx - 13.5) ** 2 < 8**2, 220, 30).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    disc_edges, noise_edges = (
        edge_mask(image) for image in display_images(torch.from_numpy(np.stack([disc, noise]))[:, None], (224, 224))
    )
    yy, xx = np.nonzero(disc_edges)
    assert np.abs(np.hypot(yy - 111.5, xx - 111.5) - 64).max() <= 6  # on the disc's outline (radius 8 px x 8)
    assert 0.9 * 2 * np.pi * 64 <= disc_edges.sum() <= 2.5 * 2 * np.pi * 64  # all round it, one or two pixels thin
    filled_2x2 = noise_edges[:-1, :-1] & noise_edges[1:, :-1] & noise_edges[:-1, 1:] & noise_edges[1:, 1:]
    assert noise_edges.sum() > 500 and not filled_2x2.any()  # many edges, none of them a band


DERMA = [INFO["dermamnist"]["label"][str(index)] for index in range(3)]  # the longest is 47 characters


def _drawn(figure: Figure):
    """The renderer of the figure drawn once, so that its constrained layout has placed every text."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def test_long_class_names_are_wrapped_to_fit_their_cell() -> None:
    captions = [f"test[{row}]\ntrue: {name}\npred: {name} (0.91)" for row, name in enumerate(DERMA)]
    overlay = overlay_figure(IMAGES, MAPS, captions, "overlay")
    grid = panel_grid(IMAGES, {"gradcam": MAPS, "layercam": MAPS}, captions, {"gradcam": captions}, "methods")
    titles = [axis.get_title() for axis in overlay.axes[:3]]
    row_labels = [grid.axes[row * 3].get_ylabel() for row in range(3)]
    under_panels = [grid.axes[row * 3 + 1].get_xlabel() for row in range(3)]
    for texts in (titles, row_labels, under_panels):
        assert max(len(line) for text in texts for line in text.split("\n")) <= CAPTION_CHARS
        assert [" ".join(text.split()) for text in texts] == [" ".join(caption.split()) for caption in captions]
    assert titles[0].split("\n")[1:3] == ["true: actinic keratoses and", "intraepithelial carcinoma"]

    # Drawn (which lays them out), the column titles stay apart and each rotated row label beside its own row;
    # unwrapped, both ran into their neighbours.
    boxes = [axis.title.get_window_extent(_drawn(overlay)) for axis in overlay.axes[:3]]
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:]))
    boxes = [grid.axes[row * 3].yaxis.label.get_window_extent(_drawn(grid)) for row in range(3)]
    assert all(lower.y1 < upper.y0 for upper, lower in zip(boxes, boxes[1:]))


def test_blend_overlay_mixes_the_image_and_the_colour_map_by_opacity() -> None:
    grey = np.full((2, 3, 1), 200, dtype=np.uint8)
    heatmap = np.array([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]])
    colours = colormaps["jet"](heatmap)[..., :3] * 255.0
    assert np.array_equal(blend_overlay(grey, heatmap, 0.0), np.full((2, 3, 3), 200, dtype=np.uint8))
    assert np.array_equal(blend_overlay(grey, heatmap, 1.0), np.round(colours).astype(np.uint8))
    halfway = blend_overlay(grey, heatmap, 0.25).astype(float)
    assert np.abs(halfway - (0.75 * 200 + 0.25 * colours)).max() <= 0.5
