"""Speed figures, each measured side by side with the usual alternative in one run.

    python scripts/benchmark.py train [--model vit-base] [--batch-size 128] [--steps 30] [--cpu]

Absolute times on shared machines are noisy; the ratios printed from one run are the figures to quote.
"""

from __future__ import annotations

import argparse
import platform

import torch

from trainers.benchmarking import MODEL_PRESETS, benchmark_training


def device_name(use_cpu: bool) -> str:
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_train(args: argparse.Namespace) -> None:
    rows = benchmark_training(
        args.model, args.image_size, args.source_size, args.batch_size, args.steps, args.warmup, args.cpu
    )
    print(
        f"\nTraining throughput, {args.model} at {args.image_size} px from {args.source_size} px uint8 images, "
        f"batch {args.batch_size}, {rows[0].steps} timed steps, on {device_name(args.cpu)}"
    )
    print("| path | images/s | this project's speed-up over it |\n|---|---|---|")
    for row in rows:
        print(
            f"| {row.path} | {row.images_per_second:,.1f} | {rows[0].images_per_second / row.images_per_second:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="training images/s: this project's path vs PIL + processor in the loader")
    train.add_argument("--model", choices=sorted(MODEL_PRESETS), default="vit-base")
    train.add_argument("--image-size", type=int, default=224, help="model input size")
    train.add_argument("--source-size", type=int, default=28, help="size of the stored uint8 images")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--steps", type=int, default=30)
    train.add_argument("--warmup", type=int, default=5, help="steps run before timing starts")
    train.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU is present")
    train.set_defaults(run=run_train)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
