"""The classifier a run trains, from its `ModelArguments` and the dataset's label space."""

from __future__ import annotations

from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from pipelines.loading import ImageData
from pipelines.models import build_classifier, load_classifier
from trainers.arguments import ModelArguments


def classifier_from_args(
    args: ModelArguments, data: ImageData, model_class: type[PreTrainedModel] | None = None
) -> tuple[PreTrainedModel, BaseImageProcessor]:
    """A pretrained checkpoint re-headed for `data`'s labels, or a fresh model from `args.model_config`.

    `model_class` forces a head class, e.g. `DeiTForImageClassificationWithTeacher` for a DeiT-style student.
    """
    if args.model_config is not None:
        return build_classifier(
            args.model_config, data.label_names, data.multi_label, args.image_processor_config, model_class
        )
    return load_classifier(
        args.model_name_or_path,
        data.label_names,
        data.multi_label,
        image_processor_overrides=args.image_processor_config,
        ignore_mismatched_sizes=args.ignore_mismatched_sizes,
        model_class=model_class,
        **args.loading_options,
    )
