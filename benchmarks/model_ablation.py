"""Model-only frames/s of each speed choice, taken in turns so shared-machine load hits all alike.

    python -m benchmarks.model_ablation --device cpu --rounds 2

Each variant is ``precision:batch:layout:batchnorm``, e.g. ``fp32:1:ncdhw:kept`` (the
reference flow's network) or ``bf16:16:cl:folded`` (the extractor's choices). Prints the
median wall-clock frames/s over rounds and frames per CPU-second (less sensitive to
other processes on the machine).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from r21d_features.models.r21d.builders import build_network, fold_batchnorm
from r21d_features.models.r21d.extractor import PRECISIONS
from r21d_features.models.r21d.zoo import get_record
from r21d_features.utils.core.console import plural

DEFAULT_VARIANTS = (
    "fp32:1:ncdhw:kept,fp32:16:ncdhw:kept,fp32:16:cl:kept,fp32:16:cl:folded,"
    "bf16:16:ncdhw:folded,bf16:16:cl:kept,bf16:16:cl:folded,bf16:32:cl:folded"
)


def measure_variants(variants: list[tuple[str, ...]], model_name: str = "r2plus1d_18_16_kinetics",
                     device: str = "cpu", rounds: int = 2, clips: int = 16) -> dict[tuple[str, ...], tuple[float, float]]:
    """``variant -> (frames/s, frames per CPU-second)``, medians over ``rounds`` taken in turns
    (every other round in reverse order). A variant is ``(precision, batch, layout, batchnorm)``
    as strings, e.g. ``("fp32", "1", "cl", "folded")``; each timing runs at least ``clips`` clips."""
    torch_device = torch.device(device)
    record = get_record(model_name)
    torch.manual_seed(0)
    base = build_network(record)
    base.fc = torch.nn.Identity()
    base.eval()
    networks: dict[tuple[str, str], torch.nn.Module] = {}
    results: dict[tuple[str, ...], list[tuple[float, float]]] = {v: [] for v in variants}
    with torch.inference_mode():
        for round_index in range(rounds):
            for variant in variants if round_index % 2 == 0 else variants[::-1]:
                precision, batch, layout, batchnorm = variant[0], int(variant[1]), variant[2], variant[3]
                key = (layout, batchnorm)
                if key not in networks:
                    net = fold_batchnorm(copy.deepcopy(base)) if batchnorm == "folded" else copy.deepcopy(base)
                    net = net.to(torch_device)
                    networks[key] = net.to(memory_format=torch.channels_last_3d) if layout == "cl" else net
                batch_clips = torch.randn(batch, 3, record.stack_size, 112, 112, device=torch_device)
                if layout == "cl":
                    batch_clips = batch_clips.contiguous(memory_format=torch.channels_last_3d)

                def forward() -> None:
                    with torch.autocast(torch_device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
                        networks[key](batch_clips)
                    if torch_device.type == "cuda":
                        torch.cuda.synchronize(torch_device)

                if round_index == 0:
                    forward()  # warm-up: oneDNN / cuDNN pick their kernels
                passes = max(1, clips // batch)
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(passes):
                    forward()
                frames = passes * batch * record.stack_size
                results[variant].append((frames / (time.perf_counter() - wall0), frames / (time.process_time() - cpu0)))
    return {variant: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
            for variant, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-name", default="r2plus1d_18_16_kinetics")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clips", type=int, default=16, help="clips per timing (at least one batch)")
    args = parser.parse_args(argv)
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    results = measure_variants(variants, args.model_name, args.device, args.rounds, args.clips)
    print(f"{args.model_name} on {args.device}, {plural(args.rounds, 'round')}\n")
    print("| precision | batch | layout | BatchNorm | frames/s (median) | frames per CPU-s (median) |")
    print("|---|---|---|---|---|---|")
    for variant, (wall, cpu) in results.items():
        print(f"| {' | '.join(variant)} | {wall:.1f} | {cpu:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
