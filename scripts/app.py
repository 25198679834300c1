"""The explorer: compare models' predictions and maps image by image in a Gradio page.

    python scripts/app.py --models runs/quickstart/teacher runs/quickstart/student \\
        --dataset_name pneumoniamnist --split test

Serves on http://127.0.0.1:7860 (--host, --port). Dataset spec: the same fields as `python -m explain`
(--dataset_source, --dataset_name, --data_dir, --medmnist_size, ...).

On a Hugging Face Space (`app_file: scripts/app.py`), run without arguments: the command line is read from the
Space variable EXPLORER_ARGS (e.g. ``--models user/teacher user/student --dataset_name pneumoniamnist``), and the
host from GRADIO_SERVER_NAME, which Spaces set to 0.0.0.0.

What the page shows is computed by `explain.explorer`; this script wires those functions into the page.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import os
import sys
from typing import Any

# Before gradio is imported: it reads this once, and the explorer must not phone home (it runs offline).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from explain.explorer import (  # noqa: E402
    MAX_MODELS,
    NO_CORRUPTION,
    PREDICTED,
    VIEWS,
    AppArguments,
    Session,
    chosen_image,
    command_line,
    gallery_items,
    gallery_order,
    start_session,
    view_image,
)
from pipelines import DataArguments, run_cli  # noqa: E402
from pipelines.config import parse_flags  # noqa: E402
from pipelines.errors import UserFacingError  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = command_line(sys.argv[1:] if argv is None else argv, os.environ)
    args, data_args = parse_flags((AppArguments, DataArguments), argv, prog="scripts/app.py")
    session = start_session(args, data_args)
    build_app(session).launch(**launch_options(args.host, args.port))


def _error(error: UserFacingError) -> str:
    gr.Warning(str(error))
    return f"**Error:** {error}"


def build_app(session: Session) -> gr.Blocks:
    """The page: models box, gallery (filtered and sorted) or upload, method/class/opacity, models side by side.

    Endpoints a client can call: ``/gallery`` (view -> items), ``/explain`` (index, upload, method, class, opacity,
    corruption, severity -> per model probabilities and overlay, the image the models saw, agreement, status) and
    ``/load_models`` (names, one a line).
    """
    explorer = session.explorer
    with gr.Blocks(title="See What You Shrink: explorer", analytics_enabled=False) as app:
        gr.Markdown("## See What You Shrink: compare models' predictions and maps image by image")
        status = gr.Markdown(elem_id="status", label="status")
        with gr.Row():
            models_box = gr.Textbox(
                "\n".join(e.name for e in explorer.explainers), label="Models (one a line)", lines=2, scale=4
            )
            load_button = gr.Button("Load models", scale=1)
        with gr.Row():
            with gr.Column(scale=2):
                view = gr.Dropdown(list(VIEWS), value=VIEWS[0], label="Show")
                order = gr.State([summary.index for summary in explorer.summaries])
                gallery = gr.Gallery(
                    gallery_items(explorer, order.value), label="Images", columns=4, height=420, elem_id="gallery"
                )
                index = gr.Number(label="Image index in the split", precision=0, elem_id="index")
                upload = gr.File(label="Or upload an image", file_types=["image"], type="filepath")
            with gr.Column(scale=3):
                with gr.Row():
                    method = gr.Dropdown(explorer.methods, value=explorer.methods[0], label="Method")
                    target = gr.Dropdown([PREDICTED, *explorer.label_names], value=PREDICTED, label="Class")
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Map opacity")
                with gr.Row():
                    corruption = gr.Dropdown(
                        [NO_CORRUPTION, *explorer.corruptions], value=NO_CORRUPTION, label="Corruption (MedMNIST-C)"
                    )
                    severity = gr.Slider(1, 5, value=3, step=1, label="Severity")
                    seen = gr.Image(label="The image every model sees", elem_id="seen", height=160)
                columns, labels, overlays = [], [], []
                with gr.Row():
                    for slot in range(MAX_MODELS):
                        shown = slot < len(explorer.explainers)
                        with gr.Column(visible=shown) as column:
                            title = explorer.explainers[slot].title if shown else f"model {slot + 1}"
                            labels.append(gr.Label(label=title, num_top_classes=explorer.top_k))
                            overlays.append(gr.Image(label=f"{title}: map", elem_id=f"overlay-{slot}"))
                        columns.append(column)
                agreement = gr.Markdown(elem_id="agreement", label="agreement")

        def show_gallery(chosen_view: str) -> tuple[list, list[int], str]:
            try:
                indices = gallery_order(session.explorer.summaries, chosen_view)
            except UserFacingError as error:
                return gr.skip(), gr.skip(), _error(error)
            note = f"{len(indices)} of {len(session.explorer.labels)} images: {chosen_view}."
            return gallery_items(session.explorer, indices), indices, note

        def pick(indices: list[int], event: gr.SelectData) -> tuple[int, None]:
            return indices[event.index], None

        def explain(
            chosen: float | None,
            file: str | None,
            name: str,
            class_name: str,
            alpha: float,
            corrupted_by: str = NO_CORRUPTION,
            strength: float = 3,
        ) -> list:
            count = len(session.explorer.explainers)
            try:
                image = chosen_image(session.explorer, chosen, file)
                row = 0 if file or chosen is None else int(chosen)  # an image's draws are seeded by its index
                result = view_image(session.explorer, image, name, class_name, alpha, corrupted_by, strength, row)
            except UserFacingError as error:
                return [None] * (2 * MAX_MODELS + 1) + ["", _error(error)]
            pad = [None] * (MAX_MODELS - count)
            return [*result.probabilities, *pad, *result.overlays, *pad, result.image, result.agreement, ""]

        def load_models(text: str) -> list:
            try:
                loaded = session.load(text.split())
            except UserFacingError as error:
                return [gr.skip()] * (3 * MAX_MODELS + 5) + [_error(error)]
            titles = [e.title for e in loaded.explainers]
            updates = [gr.Column(visible=slot < len(titles)) for slot in range(MAX_MODELS)]
            updates += [
                gr.Label(value=None, label=titles[slot] if slot < len(titles) else "") for slot in range(MAX_MODELS)
            ]
            updates += [
                gr.Image(value=None, label=f"{titles[slot]}: map" if slot < len(titles) else "")
                for slot in range(MAX_MODELS)
            ]
            indices = [summary.index for summary in loaded.summaries]
            return [
                *updates,
                gr.Dropdown(choices=loaded.methods, value=loaded.methods[0]),
                gallery_items(loaded, indices),
                indices,
                VIEWS[0],
                "",
                f"Loaded {', '.join(titles)}.",
            ]

        view.change(show_gallery, view, [gallery, order, status], api_name="gallery")
        explain_inputs = [index, upload, method, target, opacity, corruption, severity]
        explain_outputs = [*labels, *overlays, seen, agreement, status]
        gr.on(
            [
                index.submit,
                upload.upload,
                method.change,
                target.change,
                opacity.release,
                corruption.change,
                severity.release,
            ],
            explain,
            explain_inputs,
            explain_outputs,
            api_name="explain",
        )
        gallery.select(pick, order, [index, upload], api_visibility="private").then(
            explain, explain_inputs, explain_outputs, api_visibility="private"
        )
        load_button.click(
            load_models,
            models_box,
            [*columns, *labels, *overlays, method, gallery, order, view, agreement, status],
            api_name="load_models",
        )
    return app


def offline_theme() -> gr.themes.Base:
    """Gradio's default look with system fonts: its default theme fetches Google Fonts, which offline fails."""
    system = (gr.themes.Font("system-ui"), "sans-serif")
    mono = (gr.themes.Font("ui-monospace"), "monospace")
    return gr.themes.Default(font=system, font_mono=mono)


def launch_options(host: str, port: int | None) -> dict[str, Any]:
    """What `gradio.Blocks.launch` needs to serve the page offline on `host`:`port`."""
    return {
        "server_name": host,
        "server_port": port,
        "theme": offline_theme(),
        "footer_links": [],
        "ssr_mode": False,  # server-side rendering needs Node; the plain page is enough
    }


if __name__ == "__main__":
    run_cli(main)
