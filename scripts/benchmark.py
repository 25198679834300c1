"""Speed figures, each measured side by side with the usual alternative in one run.

    python scripts/benchmark.py train [--model vit-base] [--batch-size 128] [--steps 30] [--cpu]
    python scripts/benchmark.py distill [--teacher vit-base] [--student deit-tiny] [--batch-size 128] [--cpu]
    python scripts/benchmark.py explain [--model vit-base] [--batch-size 64] [--batches 10] [--cpu]
    python scripts/benchmark.py shrink [--models vit-base quickstart-teacher] [--ratio 0.5] [--repeats-batch-64 3]
    python scripts/benchmark.py faithfulness [--model vit-base] [--images 512] [--steps 20] [--cpu]
        [--road-images 4] [--road-image-size 64]
    python scripts/benchmark.py maps [--model deit-tiny] [--image-size 224] [--images 512] [--cpu]

Absolute times on shared machines are noisy; the ratios printed from one run are the figures to quote.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import torch

from explain.benchmarking import (
    GRADCAM_PRESETS,
    benchmark_faithfulness,
    benchmark_gradcam,
    benchmark_road,
    ratio_lines,
)
from explain.maps_benchmark import benchmark_maps
from trainers.benchmarking import MODEL_PRESETS, benchmark_distillation, benchmark_shrinking, benchmark_training
from trainers.model_cost import latency_text


def device_name(use_cpu: bool) -> str:
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_train(args: argparse.Namespace) -> None:
    rows = benchmark_training(
        args.model, args.image_size, args.source_size, args.batch_size, args.steps, args.warmup, args.cpu, args.compile
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
    usual, bare = rows[1], rows[-1]
    print(
        f"\nThe bare loop runs at {bare.images_per_second / usual.images_per_second:.2f}x the usual path's default "
        "rate: as far as the training step itself lets any Trainer-based path go on this machine."
    )


def run_distill(args: argparse.Namespace) -> None:
    rows = benchmark_distillation(
        args.teacher,
        args.student,
        args.image_size,
        args.source_size,
        args.batch_size,
        args.steps,
        args.warmup,
        args.cpu,
        args.student_image_size,
    )
    sizes = f"{args.image_size} px" + (f" (student {args.student_image_size} px)" if args.student_image_size else "")
    print(
        f"\nTime per training step, teacher {args.teacher} -> student {args.student} at {sizes}, "
        f"batch {args.batch_size}, {rows[0].steps} timed steps, on {device_name(args.cpu)}"
    )
    print("| step | ms per step | over the student's plain step |\n|---|---|---|")
    plain = rows[0].seconds / rows[0].steps
    for row in rows:
        per_step = row.seconds / row.steps
        print(f"| {row.path} | {per_step * 1000:,.1f} | {per_step / plain:.2f}x |")
    cached, uncached = (rows[index].seconds / rows[index].steps for index in (1, 2))
    with_cache, without_cache = (rows[index].seconds / rows[index].steps for index in (3, 4))
    print(
        f"\nThe explanation term over the plain distillation step: {with_cache / cached:.2f}x with the teacher's "
        f"logits and maps cached, {without_cache / uncached:.2f}x with the teacher run on every batch (goal <= 1.6x)."
    )


def run_explain(args: argparse.Namespace) -> None:
    rows, agreement = benchmark_gradcam(
        args.model, args.image_size, args.batch_size, args.batches, args.repeats, args.warmup, args.cpu, args.bf16
    )
    gpu = torch.cuda.is_available() and not args.cpu
    print(
        f"\nGrad-CAM maps/s, {args.model} (random weights) at {args.image_size} px, batch {args.batch_size}, "
        f"median of {args.repeats} x {args.batches} batches, on {device_name(args.cpu)}"
    )
    memory = "peak GPU memory per batch (MiB)" if gpu else "peak memory per batch (n/a on CPU)"
    print(f"| path | maps/s (median) | maps/s (best repeat) | {memory} |\n|---|---|---|---|")
    for row in rows:
        peak = "n/a" if row.peak_memory_mib is None else f"{row.peak_memory_mib:,.0f}"
        print(f"| {row.path} | {row.maps_per_second:,.1f} | {row.best_maps_per_second:,.1f} | {peak} |")
    print("\nFrom the medians:\n" + "\n".join(ratio_lines(rows)))
    print("\nFrom the best repeats (steadier on a shared CPU):\n" + "\n".join(ratio_lines(rows, best=True)))
    print("\n" + "\n".join(f"{name}: {value:.6g}" for name, value in agreement.items()))


def run_faithfulness(args: argparse.Namespace) -> None:
    timing = benchmark_faithfulness(
        args.model,
        args.image_size,
        args.images,
        args.steps,
        args.batch_size,
        args.repeats,
        args.warmup,
        args.cpu,
        args.bf16,
    )
    print(
        f"\nDeletion + insertion curves (K = {timing.steps}) over {timing.images} images, {args.model} at "
        f"{args.image_size} px, batch {args.batch_size}, median of {args.repeats}, on {device_name(args.cpu)}"
    )
    print("| work | seconds |\n|---|---|")
    print(f"| deletion + insertion curves (2 x (K + 1) masked passes) | {timing.curves_seconds:.3f} |")
    print(f"| 2 x K plain forward passes over the same images | {timing.forwards_seconds:.3f} |")
    print(f"\ncurves / forward passes: {timing.ratio:.2f}x (goal <= 1.5x)")
    road = benchmark_road(
        args.road_image_size, args.road_images, repeats=args.repeats, use_cpu=args.cpu, warmup=max(args.warmup, 1)
    )
    print(
        f"\nROAD imputation, {road.masks} masks ({args.road_images} images at {args.road_image_size} px x fractions "
        f"0.1-0.9 x MoRF/LeRF, smooth CAM-like maps), median of {args.repeats} after a warm-up, on "
        f"{device_name(args.cpu)} (pytorch-grad-cam's sparse solve runs on one thread)"
    )
    print("| imputation | seconds |\n|---|---|")
    print(f"| this project: conjugate gradients, every mask batched on the device | {road.ours_seconds:.3f} |")
    print(f"| pytorch-grad-cam NoisyLinearImputer: a sparse direct solve per mask | {road.reference_seconds:.3f} |")
    print(f"\npytorch-grad-cam / this project: {road.ratio:.2f}x (goal >= 10x on a CPU, >= 50x on a GPU)")
    print(f"largest difference of imputed pixels: {road.max_difference:.2e} (goal <= 1e-3)")


# The input size each model is used at: ViT-B/16 as published, the quickstart teacher as configs/quickstart.yaml.
SHRINK_IMAGE_SIZES = {"vit-base": 224, "quickstart-teacher": 64}


def run_shrink(args: argparse.Namespace) -> None:
    for preset in args.models:
        size = SHRINK_IMAGE_SIZES.get(preset, 224)
        rows = benchmark_shrinking(preset, size, args.ratio, args.repeats_batch_1, args.repeats_batch_64, args.warmup)
        print(
            f"\n{preset} (random weights) at {size} px, on {device_name(True)}; per-image latency, median "
            f"(quartiles) of {args.repeats_batch_1} passes at batch 1 and {args.repeats_batch_64} at batch 64, the copies "
            "taking turns pass by pass"
        )
        print(
            "| copy | parameters | size (MiB) | size / fp32 | batch 1 (ms) | batch 64 (ms/image) | speed-up, batch 1 "
            "| speed-up, batch 64 |\n|---|---|---|---|---|---|---|---|"
        )
        fp32 = rows[0]
        for row in rows:
            print(
                f"| {row.copy} | {row.parameters:,} | {row.size_bytes / 2**20:.2f} | "
                f"{row.size_bytes / fp32.size_bytes:.2f}x | {latency_text(row.latency_batch_1, row.quartiles_batch_1, 2)} "
                f"| {latency_text(row.latency_batch_64, row.quartiles_batch_64, 2)} | "
                f"{fp32.latency_batch_1 / row.latency_batch_1:.2f}x | {fp32.latency_batch_64 / row.latency_batch_64:.2f}x |"
            )
        print(compiled_comparison(rows))
    print("\nGoals (ViT-B/16): int8 <= 0.35x the size and >= 1.5x faster at batch 64; pruned 50% >= 1.5x faster.")


def compiled_comparison(rows: list) -> str:
    """Dynamic int8 against fp32 when both run under torch.compile, or why the dynamic copy is not in the table."""
    by_name = {row.copy: row for row in rows}
    dynamic, compiled = by_name.get("int8 dynamic (torchao), torch.compile"), by_name.get("fp32, torch.compile")
    if dynamic is None:
        return "int8 dynamic (torchao) left out: it quantizes nn.Linear only, and this model's weights are not mostly nn.Linear."
    return (
        f"int8 dynamic (torchao), torch.compile against fp32, torch.compile at batch 64: "
        f"{compiled.latency_batch_64 / dynamic.latency_batch_64:.2f}x"
    )


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than `minimum` (argparse then ends a bad value in one line)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message: "invalid integer value"
    return parse


def run_maps(args: argparse.Namespace) -> None:
    rows = benchmark_maps(
        args.model,
        args.image_size,
        args.source_size,
        args.images,
        args.batch_size,
        args.shard_size,
        args.methods,
        args.cpu or not torch.cuda.is_available(),
    )
    print(
        f"\nMaps dataset (python -m explain --save_maps), {args.model} (random weights) at {args.image_size} px from "
        f"{args.source_size} px, {args.images} images x {args.methods}, batch {args.batch_size}, on {device_name(args.cpu)}"
    )
    print("| processes | threads each | maps/s | seconds | share of the time writing the dataset |")
    print("|---|---|---|---|---|")
    for row in rows:
        threads = row.threads or "GPU"
        print(
            f"| {row.processes} | {threads} | {row.maps_per_second:,.1f} | {row.seconds:.2f} | {row.write_share:.2%} |"
        )
    if len(rows) > 1:
        print(f"\n{rows[-1].processes} processes: {rows[-1].maps_per_second / rows[0].maps_per_second:.2f}x one's rate")
    print(f"Writing: at most {max(row.write_share for row in rows):.2%} of a run (goal: <= 10%).")


def add_shared_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--image-size", type=at_least(1), default=224, help="model input size")
    command.add_argument("--source-size", type=at_least(1), default=28, help="size of the stored uint8 images")
    command.add_argument("--batch-size", type=at_least(1), default=128)
    command.add_argument("--steps", type=at_least(1), default=30)
    command.add_argument("--warmup", type=at_least(0), default=5, help="steps run before timing starts")
    command.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU is present")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="training images/s: this project's path vs PIL + processor in the loader")
    train.add_argument("--model", choices=sorted(MODEL_PRESETS), default="vit-base")
    add_shared_options(train)
    train.add_argument("--compile", action="store_true", help="also time this project's path with torch_compile")
    train.set_defaults(run=run_train)
    distill = commands.add_parser(
        "distill", help="time per distillation step (cached / uncached teacher, with / without the explanation term)"
    )
    distill.add_argument("--teacher", choices=sorted(MODEL_PRESETS), default="vit-base")
    distill.add_argument("--student", choices=sorted(MODEL_PRESETS), default="deit-tiny")
    add_shared_options(distill)
    distill.add_argument("--student-image-size", type=at_least(1), default=None, help="the student's input size")
    distill.set_defaults(run=run_distill)
    explain = commands.add_parser("explain", help="Grad-CAM maps/s: this project vs Captum vs pytorch-grad-cam")
    explain.add_argument("--model", choices=sorted(GRADCAM_PRESETS), default="vit-base")
    explain.add_argument("--image-size", type=at_least(1), default=224, help="model input size")
    explain.add_argument("--batch-size", type=at_least(1), default=64)
    explain.add_argument("--batches", type=at_least(1), default=10, help="batches per timed repeat")
    explain.add_argument("--repeats", type=at_least(1), default=3, help="timed repeats; the median is reported")
    explain.add_argument("--warmup", type=at_least(0), default=2, help="batches run before timing each path")
    explain.add_argument("--bf16", action="store_true", default=None, help="add bf16 paths on the CPU too")
    explain.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU is present")
    explain.set_defaults(run=run_explain)
    faithfulness = commands.add_parser(
        "faithfulness", help="deletion + insertion curves (K steps) over N images vs 2K forward passes"
    )
    faithfulness.add_argument("--model", choices=sorted(GRADCAM_PRESETS), default="vit-base")
    faithfulness.add_argument("--image-size", type=at_least(1), default=224)
    faithfulness.add_argument("--images", type=at_least(1), default=512)
    faithfulness.add_argument("--steps", type=at_least(1), default=20, help="K")
    faithfulness.add_argument("--batch-size", type=at_least(1), default=64)
    faithfulness.add_argument("--repeats", type=at_least(1), default=3)
    faithfulness.add_argument("--warmup", type=at_least(0), default=1)
    faithfulness.add_argument("--road-images", type=at_least(1), default=4, help="images for the ROAD timing")
    faithfulness.add_argument(
        "--road-image-size",
        type=at_least(16),
        default=64,
        help="their size (pytorch-grad-cam takes seconds per mask at 224 px)",
    )
    faithfulness.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast on the CPU too")
    faithfulness.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU is present")
    faithfulness.set_defaults(run=run_faithfulness)
    maps = commands.add_parser("maps", help="maps dataset rows/s on 1 and 2 processes, and the share spent writing")
    maps.add_argument("--model", choices=sorted(GRADCAM_PRESETS), default="deit-tiny")
    maps.add_argument("--image-size", type=at_least(1), default=224, help="model input size")
    maps.add_argument("--source-size", type=int, choices=(28, 64, 128, 224), default=28, help="stored image size")
    maps.add_argument("--images", type=at_least(1), default=512)
    maps.add_argument("--batch-size", type=at_least(1), default=64)
    maps.add_argument("--shard-size", type=at_least(1), default=1024)
    maps.add_argument("--methods", default="gradcam", help="comma-separated, as python -m explain takes them")
    maps.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU is present")
    maps.set_defaults(run=run_maps)
    shrink = commands.add_parser("shrink", help="size and CPU latency of fp32, int8 and pruned copies")
    shrink.add_argument(
        "--models", nargs="+", choices=sorted(MODEL_PRESETS), default=["vit-base", "quickstart-teacher"]
    )
    shrink.add_argument("--ratio", type=float, default=0.5, help="pruning ratio")
    shrink.add_argument("--repeats-batch-1", type=at_least(1), default=10)
    shrink.add_argument("--repeats-batch-64", type=at_least(1), default=3)
    shrink.add_argument("--warmup", type=at_least(0), default=1, help="passes before timing, per batch size")
    shrink.set_defaults(run=run_shrink)
    args = parser.parse_args()
    if args.command in ("train", "distill") and args.warmup >= args.steps:
        parser.error(f"--warmup ({args.warmup}) must be smaller than --steps ({args.steps}), or nothing is timed")
    args.run(args)


if __name__ == "__main__":
    main()
