"""Speed figures, each measured side by side with the usual alternative in one run.

    python scripts/benchmark.py train [--model vit-base] [--batch_size 128] [--steps 30] [--cpu] [--compile]
    python scripts/benchmark.py distill [--teacher vit-base] [--student deit-tiny] [--batch_size 128] [--cpu]
    python scripts/benchmark.py explain [--model vit-base] [--batch_size 64] [--batches 10] [--cpu]
    python scripts/benchmark.py attention [--model vit-base] [--batch_size 64] [--batches 4] [--cpu]
    python scripts/benchmark.py shrink [--models vit-base quickstart-teacher] [--ratio 0.5] [--repeats_batch_64 3]
    python scripts/benchmark.py faithfulness [--model vit-base] [--images 512] [--steps 20] [--cpu]
        [--road_images 4] [--road_image_size 64]
    python scripts/benchmark.py maps [--model deit-tiny] [--image_size 224] [--images 512] [--cpu]
    python scripts/benchmark.py corruptions [--image_size 224] [--images 64] [--severity 3] [--families all] [--cpu]
        [--reference_python .venv-imagecorruptions/bin/python]

Options are spelt as every other script spells them (--batch_size); --batch-size is read the same way.
`python scripts/benchmark.py <command> --help` lists a command's options. Absolute times on shared machines are
noisy; the ratios printed from one run are the figures to quote.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import sys
from collections.abc import Callable

import torch

from pipelines import run_cli
from pipelines.config import parse_flags
from pipelines.errors import ConfigError
from pipelines.runtime import default_device, machine_description
from trainers.benchmark.attention import AttentionBenchmark, attention_ratio_lines, benchmark_attention
from trainers.benchmark.corruptions import CorruptionBenchmark, benchmark_corruptions, overall_rates
from trainers.benchmark.distillation import DistillationBenchmark, benchmark_distillation
from trainers.benchmark.faithfulness import FaithfulnessBenchmark, benchmark_faithfulness, benchmark_road
from trainers.benchmark.gradcam import GradCAMBenchmark, GradCAMRow, benchmark_gradcam, ratio_lines
from trainers.benchmark.maps import MapsBenchmark, benchmark_maps
from trainers.benchmark.shrinking import SHRINK_IMAGE_SIZES, ShrinkBenchmark, benchmark_shrinking, compiled_comparison
from trainers.benchmark.training import TrainingBenchmark, benchmark_training
from trainers.report.cost import latency_text


def on(use_cpu: bool) -> str:
    return machine_description(default_device(use_cpu))


def run_train(args: TrainingBenchmark) -> None:
    rows = benchmark_training(args)
    print(
        f"\nTraining throughput, {args.model} at {args.image_size} px from {args.source_size} px uint8 images, "
        f"batch {args.batch_size}, {rows[0].steps} timed steps, on {on(args.cpu)}"
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


def run_distill(args: DistillationBenchmark) -> None:
    rows = benchmark_distillation(args)
    sizes = f"{args.image_size} px" + (f" (student {args.student_image_size} px)" if args.student_image_size else "")
    print(
        f"\nTime per training step, teacher {args.teacher} -> student {args.student} at {sizes}, "
        f"batch {args.batch_size}, {rows[0].steps} timed steps, on {on(args.cpu)}"
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


def print_rates(rows: list[GradCAMRow], gpu: bool) -> None:
    """The maps/s table of the explain and attention benchmarks."""
    memory = "peak GPU memory per batch (MiB)" if gpu else "peak memory per batch (n/a on CPU)"
    print(f"| path | maps/s (median) | maps/s (best repeat) | {memory} |\n|---|---|---|---|")
    for row in rows:
        peak = "n/a" if row.peak_memory_mib is None else f"{row.peak_memory_mib:,.0f}"
        print(f"| {row.path} | {row.maps_per_second:,.1f} | {row.best_maps_per_second:,.1f} | {peak} |")


def run_explain(args: GradCAMBenchmark) -> None:
    rows, agreement = benchmark_gradcam(args)
    print(
        f"\nGrad-CAM maps/s, {args.model} (random weights) at {args.image_size} px, batch {args.batch_size}, "
        f"median of {args.repeats} x {args.batches} batches, on {on(args.cpu)}"
    )
    print_rates(rows, args.device.type == "cuda")
    print("\nFrom the medians:\n" + "\n".join(ratio_lines(rows)))
    print("\nFrom the best repeats (steadier on a shared CPU):\n" + "\n".join(ratio_lines(rows, best=True)))
    print("\n" + "\n".join(f"{name}: {value:.6g}" for name, value in agreement.items()))


def run_attention(args: AttentionBenchmark) -> None:
    rows = benchmark_attention(args)
    print(
        f"\nAttention-gradient maps/s beside Grad-CAM and the forward pass, {args.model} (random weights) at "
        f"{args.image_size} px, batch {args.batch_size}, median of {args.repeats} x {args.batches} batches, on "
        f"{on(args.cpu)}"
    )
    print_rates(rows, args.device.type == "cuda")
    print("\nFrom the medians:\n" + "\n".join(attention_ratio_lines(rows)))


def run_faithfulness(args: FaithfulnessBenchmark) -> None:
    timing = benchmark_faithfulness(args)
    print(
        f"\nDeletion + insertion curves (K = {timing.steps}) over {timing.images} images, {args.model} at "
        f"{args.image_size} px, batch {args.batch_size}, median of {args.repeats}, on {on(args.cpu)}"
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
        f"{on(args.cpu)} (pytorch-grad-cam's sparse solve runs on one thread)"
    )
    print("| imputation | seconds |\n|---|---|")
    print(f"| this project: conjugate gradients, every mask batched on the device | {road.ours_seconds:.3f} |")
    print(f"| pytorch-grad-cam NoisyLinearImputer: a sparse direct solve per mask | {road.reference_seconds:.3f} |")
    print(f"\npytorch-grad-cam / this project: {road.ratio:.2f}x (goal >= 10x on a CPU, >= 50x on a GPU)")
    print(f"largest difference of imputed pixels: {road.max_difference:.2e} (goal <= 1e-3)")


def run_shrink(args: ShrinkBenchmark) -> None:
    for preset in args.models:
        rows = benchmark_shrinking(args, preset)
        print(
            f"\n{preset} (random weights) at {SHRINK_IMAGE_SIZES.get(preset, 224)} px, on {on(True)}; per-image "
            f"latency, median (quartiles) of {args.repeats_batch_1} passes at batch 1 and {args.repeats_batch_64} at "
            "batch 64, the copies taking turns pass by pass"
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


def run_maps(args: MapsBenchmark) -> None:
    rows = benchmark_maps(args)
    print(
        f"\nMaps dataset (python -m explain --save_maps), {args.model} (random weights) at {args.image_size} px from "
        f"{args.source_size} px, {args.images} images x {args.methods}, batch {args.batch_size}, on {on(args.cpu)}"
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


def run_corruptions(args: CorruptionBenchmark) -> None:
    rows = benchmark_corruptions(args)
    threads = torch.get_num_threads()
    print(
        f"\nCorrupted images/s, {args.images} RGB images at {args.image_size} px, severity {args.severity} (this "
        f"project: MedMNIST-C's parameters, {args.dataset}'s where it lists the family; imagecorruptions: ImageNet-C's), "
        f"median of {args.repeats}, this project on {on(args.cpu)}, imagecorruptions on the CPU one image at a time; "
        f"{threads} thread(s) each"
    )
    print("| family | parameter here | this project (img/s) | imagecorruptions (img/s) | speed-up |")
    print("|---|---|---|---|---|")
    for row in rows:
        name = row.family if row.family == row.reference_family else f"{row.family} ({row.reference_family})"
        print(f"| {name} | {row.parameter} | {row.ours:,.1f} | {row.reference:,.1f} | {row.ratio:.1f}x |")
    ours, reference = overall_rates(rows)
    print(
        f"\nEvery image through each of the {len(rows)} families once: {ours:,.1f} images/s here, {reference:,.1f} with "
        f"imagecorruptions: {ours / reference:.1f}x (goal >= 10x on the CPU)."
    )


COMMANDS: dict[str, tuple[type, Callable]] = {
    "train": (TrainingBenchmark, run_train),
    "distill": (DistillationBenchmark, run_distill),
    "explain": (GradCAMBenchmark, run_explain),
    "attention": (AttentionBenchmark, run_attention),
    "faithfulness": (FaithfulnessBenchmark, run_faithfulness),
    "maps": (MapsBenchmark, run_maps),
    "shrink": (ShrinkBenchmark, run_shrink),
    "corruptions": (CorruptionBenchmark, run_corruptions),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        names = list(COMMANDS)
        raise ConfigError(f"Name a benchmark: {', '.join(names[:-1])} or {names[-1]} (--help describes them).")
    if argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv[0] not in COMMANDS:
        raise ConfigError(f"Unknown benchmark {argv[0]!r}; choose one of {', '.join(COMMANDS)}.")
    settings_class, run = COMMANDS[argv[0]]
    (settings,) = parse_flags((settings_class,), argv[1:], prog=f"scripts/benchmark.py {argv[0]}")
    run(settings)


if __name__ == "__main__":
    run_cli(main)
