"""The explorer: compare models' predictions and maps image by image in a Gradio page.

    python scripts/app.py --models runs/quickstart/teacher runs/quickstart/student \\
        --dataset_name pneumoniamnist --split test

Serves on http://127.0.0.1:7860 (--host, --port). Dataset spec: the same fields as `python -m explain`
(--dataset_source, --dataset_name, --data_dir, --medmnist_size, ...).

Served publicly (--host 0.0.0.0, or on a Space) it is share-safe unless told otherwise (--share_safe): visitors can
load only the models given here. `--export_space DIR` writes a ready Hugging Face Space folder instead of serving
(`explain.space`), and `--push_to_hub REPO` pushes it, private unless --hub_private_repo false.

Run without arguments, as a Space runs its app file: the command line is read from the variable EXPLORER_ARGS
(e.g. ``--models user/teacher user/student --dataset_name pneumoniamnist``), and the host from GRADIO_SERVER_NAME,
which Spaces set to 0.0.0.0.

What the page shows is computed by `explain.explorer`; this script wires those functions into the page.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import os
import sys
from pathlib import Path
from typing import Any

# Before gradio is imported: it reads this once, and the explorer must not phone home (it runs offline).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from explain.explorer import (  # noqa: E402
    MAP_EXPLAINED,
    MAX_MODELS,
    MAX_UPLOAD_BYTES,
    NO_CORRUPTION,
    PREDICTED,
    VIEWS,
    AppArguments,
    Explorer,
    Session,
    chosen_image,
    colour_key_html,
    command_line,
    gallery_items,
    gallery_order,
    image_caption,
    start_session,
    view_image,
)
from explain.space import SpaceArguments, export_space, push_space  # noqa: E402
from pipelines import DataArguments, run_cli  # noqa: E402
from pipelines.config import parse_flags  # noqa: E402
from pipelines.errors import UserFacingError  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = command_line(sys.argv[1:] if argv is None else argv, os.environ)
    args, data_args, space_args = parse_flags(
        (AppArguments, DataArguments, SpaceArguments), argv, prog="scripts/app.py"
    )
    if space_args.export_space:
        folder = export_space(space_args.export_space, args, data_args, Path(__file__))
        print(f"Wrote a Hugging Face Space to {folder}.")
        if space_args.push_to_hub:
            print(f"Pushed it to {push_space(folder, space_args.push_to_hub, space_args.hub_private_repo)}.")
        return
    session = start_session(args, data_args)
    build_app(session).launch(**launch_options(args.host, args.port))


def _error(error: UserFacingError) -> str:
    gr.Warning(str(error))
    return f"**Error:** {error}"


# Gradio cuts captions to one line with an ellipsis; the gallery's say which model predicted what, so they wrap.
CSS = """
#gallery .caption, #gallery .caption-label { white-space: normal; overflow: visible; max-width: 100%; }
"""


def build_app(session: Session) -> gr.Blocks:
    """The page: models box, gallery (filtered and sorted) or upload, method/class/opacity, models side by side,
    each named on its prediction and its map, under a colour key; the first image is explained when the page opens.

    What a visitor loads is theirs alone: their explorer is kept in the page's per-visitor state (`gr.State`; None
    until they load models: the session's). Every event that runs the models shares one queue, so that two
    visitors never run one model's hooks at once.

    Endpoints a client can call: ``/gallery`` (view -> items), ``/explain`` (index, upload, method, class, opacity,
    corruption, severity -> per model probabilities and overlay, the image the models saw, agreement, status) and
    ``/load_models`` (names, one a line).
    """
    explorer = session.explorer
    with gr.Blocks(title="See What You Shrink: explorer", analytics_enabled=False) as app:
        gr.Markdown("## See What You Shrink: compare models' predictions and maps image by image")
        gr.Markdown(MAP_EXPLAINED, elem_id="about")
        status = gr.Markdown(elem_id="status", label="status")
        visitor = gr.State(None)  # this visitor's Explorer once they load models; None: the session's
        with gr.Row():
            models_box = gr.Textbox(
                "\n".join(session.names_shown()),
                label="Models (one a line)" + (": only these can be loaded here" if session.share_safe else ""),
                lines=2,
                scale=4,
            )
            load_button = gr.Button("Load models", scale=1)
        with gr.Row():
            with gr.Column(scale=2):
                view = gr.Dropdown(list(VIEWS), value=VIEWS[0], label="Show")
                order = gr.State([summary.index for summary in explorer.summaries])
                gallery = gr.Gallery(
                    gallery_items(explorer, order.value), label="Images", columns=3, height=460, elem_id="gallery"
                )
                index = gr.Number(order.value[0], label="Image index in the split", precision=0, elem_id="index")
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
                    # Only the fullscreen button: the label in a narrow column was cut short by three icons.
                    seen = gr.Image(label="What every model sees", elem_id="seen", height=160, buttons=["fullscreen"])
                chosen = gr.Markdown(elem_id="chosen")
                columns, labels, overlays = [], [], []
                with gr.Row():
                    for slot in range(MAX_MODELS):
                        shown = slot < len(explorer.explainers)
                        with gr.Column(visible=shown) as column:
                            title = explorer.explainers[slot].title if shown else f"model {slot + 1}"
                            labels.append(gr.Label(label=title, num_top_classes=explorer.top_k))
                            overlays.append(gr.Image(label=f"{title}: map", elem_id=f"overlay-{slot}"))
                        columns.append(column)
                gr.HTML(colour_key_html(), elem_id="colour-key")
                agreement = gr.Markdown(elem_id="agreement", label="agreement")

        def show_gallery(chosen_view: str, mine: Explorer | None) -> tuple[list, list[int], str]:
            current = mine or session.explorer
            try:
                indices = gallery_order(current.summaries, chosen_view)
            except UserFacingError as error:
                return gr.skip(), gr.skip(), _error(error)
            note = f"{len(indices)} of {len(current.labels)} images: {chosen_view}."
            return gallery_items(current, indices), indices, note

        def pick(indices: list[int], event: gr.SelectData) -> tuple[int, None]:
            return indices[event.index], None

        def explain(
            picked: float | None,
            file: str | None,
            name: str,
            class_name: str,
            alpha: float,
            corrupted_by: str = NO_CORRUPTION,
            strength: float = 3,
            mine: Explorer | None = None,
        ) -> list:
            current = mine or session.explorer
            count = len(current.explainers)
            try:
                image, note = chosen_image(current, picked, file)
                row = 0 if file or picked is None else int(picked)  # an image's draws are seeded by its index
                result = view_image(current, image, name, class_name, alpha, corrupted_by, strength, row)
            except UserFacingError as error:
                return [None] * (2 * MAX_MODELS + 1) + ["", "", _error(error)]
            pad = [None] * (MAX_MODELS - count)
            caption = f"Uploaded {Path(file).name}." if file else image_caption(current, int(picked))
            return [
                *[gr.Label(top, label=title) for top, title in zip(result.probabilities, result.prediction_titles)],
                *pad,
                *[gr.Image(shown, label=title) for shown, title in zip(result.overlays, result.map_titles)],
                *pad,
                result.image,
                f"**{caption}** {note}".strip(),
                result.agreement,
                "",
            ]

        def explain_keeping_status(*inputs: Any) -> list:
            """`explain` after "Load models": its status line keeps saying what was loaded."""
            return [*explain(*inputs)[:-1], gr.skip()]

        def load_models(text: str) -> list:
            try:
                loaded = session.load(text.split())
            except UserFacingError as error:
                return [gr.skip()] * (3 * MAX_MODELS + 8) + [_error(error)]
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
                indices[0],
                None,
                "",
                loaded,
                f"Loaded {', '.join(titles)}.",
            ]

        view.change(show_gallery, [view, visitor], [gallery, order, status], api_name="gallery")
        explain_inputs = [index, upload, method, target, opacity, corruption, severity, visitor]
        explain_outputs = [*labels, *overlays, seen, chosen, agreement, status]
        on_models = {"concurrency_id": "models"}  # one queue for every event that runs the models (see above)
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
            **on_models,
        )
        app.load(explain, explain_inputs, explain_outputs, api_visibility="private", **on_models)
        gallery.select(pick, order, [index, upload], api_visibility="private").then(
            explain, explain_inputs, explain_outputs, api_visibility="private", **on_models
        )
        load_button.click(
            load_models,
            models_box,
            [*columns, *labels, *overlays, method, gallery, order, view, index, upload, agreement, visitor, status],
            api_name="load_models",
            **on_models,
        ).then(explain_keeping_status, explain_inputs, explain_outputs, api_visibility="private", **on_models)
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
        "css": CSS,
        "max_file_size": MAX_UPLOAD_BYTES,  # gradio refuses a larger upload before it is stored
    }


if __name__ == "__main__":
    run_cli(main)
