"""Pictures of explanations: overlays, images-by-methods and images-by-models grids, misclassified images.

Figures are `matplotlib.figure.Figure` objects (no pyplot state), saved with `pipelines.io.atomic_save_figure`.
Every map arrives min-max scaled to 0-1 on its own (`explain.base.scale_to_unit`) and is drawn with the colour map
fixed to 0-1 and one colour bar per figure: panels compare where each map is high, not how strong two maps are.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

CMAP = "jet"
ALPHA = 0.5
CELL_INCHES = 1.7
TITLE_SIZE = 8
# About the most characters of a caption line at TITLE_SIZE that fit one cell (~4.2 pt a character in 122 pt):
# longer lines ran into the next column's title, or, as rotated row labels, into the rows above and below.
CAPTION_CHARS = 28
COLORBAR_LABEL = "attribution (each map scaled to 0-1)"


def display_images(images: torch.Tensor | Sequence[torch.Tensor], size: tuple[int, int]) -> np.ndarray:
    """uint8 images resized (antialiased bilinear) to the maps' resolution, channels last, for drawing.

    Args:
        images: uint8 (B, C, H, W), or a list of uint8 (C, H, W) of different sizes.
        size: (H', W'), the maps' size.

    Returns:
        uint8 (B, H', W', C) with C = 1 or 3.
    """
    resized = []
    for image in images:
        image = image[:3].float()[None]  # (1, C, H, W)
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        resized.append(image[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0))
    if len({image.shape[2] for image in resized}) > 1:  # grey and colour files together: show all in colour
        resized = [image.expand(-1, -1, 3) for image in resized]
    return torch.stack(resized).cpu().numpy()


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Maps (N, h, w) in [0, 1] resized to `size` (bilinear) as a numpy array, for grids of models with different
    input resolutions."""
    maps = maps.float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return maps.clamp(0, 1).cpu().numpy()


def edge_mask(image: np.ndarray, quantile: float = 0.8) -> np.ndarray:
    """The image's strongest edges, one or two pixels thin.

    Sobel gradients of the grey levels, thinned by keeping only pixels that are a local maximum of the gradient
    magnitude across the edge (Canny's non-maximum suppression, with the direction rounded to horizontal or
    vertical), then kept where the magnitude reaches the `quantile` of the image's and a fifth of its largest.
    As in Canny, the grey levels are smoothed first, here by a Gaussian of a 56th of the image's side (4 px at
    224): the images drawn are often upsampled (28 px MedMNIST under a 224 px map), and bilinear upsampling
    leaves cells of constant gradient that the thinning cannot thin, which showed as bands and dashes.

    Args:
        image: uint8 (H, W, C).
        quantile: Share of pixels whose magnitude is too low to be an edge.

    Returns:
        bool (H, W).
    """
    grey = torch.as_tensor(image, dtype=torch.float32).mean(dim=2)[None, None]  # (1, 1, H, W)
    sigma = max(1.0, min(grey.shape[-2:]) / 56)
    grey = TF.gaussian_blur(grey, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3)
    gradients = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)[0]  # (2, H, W)
    magnitude = gradients.pow(2).sum(dim=0).sqrt()  # (H, W)
    if float(magnitude.max()) == 0.0:
        return np.zeros(magnitude.shape, dtype=bool)
    padded = magnitude[None, None]
    across_x = F.max_pool2d(padded, (1, 3), stride=1, padding=(0, 1))[0, 0]
    across_y = F.max_pool2d(padded, (3, 1), stride=1, padding=(1, 0))[0, 0]
    mostly_x = gradients[0].abs() >= gradients[1].abs()  # the edge runs vertically: look across it along x
    thin = torch.where(mostly_x, magnitude >= across_x, magnitude >= across_y)
    strong = (magnitude >= torch.quantile(magnitude.flatten(), quantile)) & (magnitude > 0.2 * magnitude.max())
    return (thin & strong).numpy()


def draw_image(axis: Axes, image: np.ndarray) -> None:
    """An (H, W, C) uint8 image, grey when it has one channel."""
    if image.shape[2] == 1:
        axis.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
    else:
        axis.imshow(image)
    _bare(axis)


def draw_overlay(
    axis: Axes, image: np.ndarray, heatmap: np.ndarray, edges: bool = False, alpha: float = ALPHA
) -> AxesImage:
    """The image with a map in [0, 1] on top (fixed 0-1 colour scale), optionally with the image's edges in white.

    Args:
        axis: Where to draw.
        image: uint8 (H, W, C).
        heatmap: (H, W) in [0, 1].
        edges: Outline the image's edges over the map, to tell structures apart where the map covers them.
        alpha: Opacity of the map.

    Returns:
        The map's `AxesImage` (for a colour bar).
    """
    draw_image(axis, image)
    mappable = axis.imshow(heatmap, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear")
    if edges:
        outline = np.ma.masked_where(~edge_mask(image), np.ones(heatmap.shape))
        axis.imshow(outline, cmap="gray", vmin=0, vmax=1, alpha=0.7, interpolation="nearest")
    if float(np.max(heatmap)) == 0.0:
        # Grad-CAM keeps positive evidence only (its ReLU); for the other class of a binary model it is often none.
        axis.text(
            0.5,
            0.5,
            "no positive\nevidence",
            transform=axis.transAxes,
            ha="center",
            va="center",
            fontsize=TITLE_SIZE,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "linewidth": 0},
        )
    return mappable


def wrap_caption(text: str, width: int = CAPTION_CHARS) -> str:
    """Each line of a caption wrapped to `width` characters (at spaces and hyphens), its own line breaks kept."""
    return "\n".join(textwrap.fill(line, width) if line else line for line in text.split("\n"))


def _bare(axis: Axes) -> None:
    axis.set_xticks([])
    axis.set_yticks([])


def _grid(rows: int, columns: int, title: str) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(CELL_INCHES * columns + 0.9, CELL_INCHES * rows + 0.5), layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 2)
    return figure, axes


def _colorbar(figure: Figure, axes: np.ndarray) -> None:
    # Opaque (the overlays are translucent), about two cells tall whatever the number of rows.
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CMAP)
    bar = figure.colorbar(scale, ax=list(axes.flat), shrink=min(0.8, 2.2 / axes.shape[0]), pad=0.01, aspect=15)
    bar.set_label(COLORBAR_LABEL, fontsize=TITLE_SIZE)
    bar.ax.tick_params(labelsize=TITLE_SIZE)


def overlay_figure(
    images: np.ndarray, maps: np.ndarray, captions: Sequence[str], title: str = "", edges: bool = False
) -> Figure:
    """Each image above its map overlay.

    Args:
        images: uint8 (B, H, W, C).
        maps: (B, H, W) in [0, 1].
        captions: One caption per image, above it (e.g. its name and the explained class with its score).
        title: The figure's title.
        edges: Draw the images' edges over the maps.
    """
    figure, axes = _grid(2, len(images), title)
    for column, (image, heatmap, caption) in enumerate(zip(images, maps, captions)):
        draw_image(axes[0, column], image)
        axes[0, column].set_title(wrap_caption(caption), fontsize=TITLE_SIZE)
        draw_overlay(axes[1, column], image, heatmap, edges)
    axes[0, 0].set_ylabel("input", fontsize=TITLE_SIZE)
    axes[1, 0].set_ylabel("overlay", fontsize=TITLE_SIZE)
    _colorbar(figure, axes)
    return figure


def panel_grid(
    images: np.ndarray,
    panels: dict[str, np.ndarray],
    row_labels: Sequence[str],
    cell_captions: dict[str, Sequence[str]] | None = None,
    title: str = "",
    edges: bool = False,
) -> Figure:
    """Images down the rows; the input, then one overlay per column (a method, or a model), with one 0-1 colour bar.

    Args:
        images: uint8 (B, H, W, C).
        panels: Column title -> maps (B, H, W) in [0, 1].
        row_labels: One label per image, beside its input.
        cell_captions: Column title (or ``"input"``) -> one caption per image, written under the panel (e.g. that
            model's prediction), or None.
        title: The figure's title.
        edges: Draw the images' edges over the maps.
    """
    figure, axes = _grid(len(images), len(panels) + 1, title)
    for row, image in enumerate(images):
        draw_image(axes[row, 0], image)
        axes[row, 0].set_ylabel(wrap_caption(row_labels[row]), fontsize=TITLE_SIZE)
        for column, maps in enumerate(panels.values(), start=1):
            draw_overlay(axes[row, column], image, maps[row], edges)
        for column, name in enumerate(["input", *panels]):
            caption = (cell_captions or {}).get(name)
            if caption is not None:
                axes[row, column].set_xlabel(wrap_caption(caption[row]), fontsize=TITLE_SIZE - 1)
    axes[0, 0].set_title("input", fontsize=TITLE_SIZE)
    for column, name in enumerate(panels, start=1):
        axes[0, column].set_title(wrap_caption(name), fontsize=TITLE_SIZE)
    _colorbar(figure, axes)
    return figure


@dataclass
class MisclassifiedPanels:
    """What misclassified.png shows of each image.

    Attributes:
        images: uint8 (B, H, W, C).
        predicted_maps: (B, H, W) in [0, 1], explaining the predicted class.
        true_maps: (B, H, W) in [0, 1], explaining the true class, or None.
        true_labels: The true label of each image.
        predicted_labels: The predicted label (with its score) of each image.
        names: Where each image comes from (beside it), or None.
    """

    images: np.ndarray
    predicted_maps: np.ndarray
    true_maps: np.ndarray | None
    true_labels: Sequence[str]
    predicted_labels: Sequence[str]
    names: Sequence[str] | None = None


def misclassified_figure(
    panels: MisclassifiedPanels, title: str = "", edges: bool = False, map_title: str = "Grad-CAM: predicted class"
) -> Figure:
    """Misclassified images: the input with its true and predicted labels, Grad-CAM for the predicted class and,
    when given, for the true class (what the model would have needed to see).

    Args:
        panels: The images, their maps and labels.
        title: The figure's title.
        edges: Draw the images' edges over the maps.
        map_title: The title of the predicted-class column.
    """
    columns = {map_title: panels.predicted_maps}
    if panels.true_maps is not None:
        columns["Grad-CAM: true class"] = panels.true_maps
    labels = [
        f"true: {true}\npred: {predicted}" for true, predicted in zip(panels.true_labels, panels.predicted_labels)
    ]
    row_names = list(panels.names) if panels.names is not None else [""] * len(panels.images)
    return panel_grid(panels.images, columns, row_names, {"input": labels}, title, edges)


def blend_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The image with a map in [0, 1] laid over it in the figures' colour map, as one RGB array (for a web page,
    where a matplotlib figure per image would be slow and blurry).

    Args:
        image: uint8 (H, W, C) with C = 1 or 3.
        heatmap: (H, W) in [0, 1].
        alpha: Opacity of the map, in [0, 1].

    Returns:
        uint8 (H, W, 3).
    """
    colours = colormaps[CMAP](np.clip(heatmap, 0.0, 1.0))[..., :3]  # (H, W, 3) in [0, 1]
    base = np.broadcast_to(image[..., :3], image.shape[:2] + (3,)).astype(np.float64) / 255.0
    blended = (1.0 - alpha) * base + alpha * colours
    return np.round(blended * 255.0).clip(0, 255).astype(np.uint8)
