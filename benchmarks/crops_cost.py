"""What multi-crop costs end to end: ``crops=five|ten`` against the default centre crop.

    python -m benchmarks.crops_cost --device cpu [--video sample/bbb_4x3_25fps.mp4] [--rounds 2]

Times ``R21DExtractor.extract_video`` (decode, preprocessing, network, features to the host)
for each ``crops`` value on the same video, in turns, round after round; the model is built
once per mode, outside the timing, and warmed up. Prints a Markdown table: seconds per round,
the best round and its ratio to the centre run. Random weights: the cost, not the features.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from models.r21d import R21DExtractor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default="sample/bbb_4x3_25fps.mp4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-name", default="r2plus1d_18_16_kinetics")
    parser.add_argument("--stack-size", type=int, default=None)
    parser.add_argument("--step-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--crops", default="center,five,ten")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    modes = args.crops.split(",")
    extractors = {
        crops: R21DExtractor(args.model_name, device=args.device, random_weights=True, crops=crops,
                             stack_size=args.stack_size, step_size=args.step_size, batch_size=args.batch_size,
                             decode_workers=1)
        for crops in modes
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    windows = {}
    for ex in extractors.values():  # warm-up (oneDNN primitives, file cache)
        ex.extract_video(args.video)
    for r in range(args.rounds):
        for crops in modes if r % 2 == 0 else modes[::-1]:
            t0 = time.perf_counter()
            result = extractors[crops].extract_video(args.video)
            times[crops].append(time.perf_counter() - t0)
            windows[crops] = result.features.shape
    base = min(times[modes[0]])
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, {args.model_name}, video {args.video}")
    print("| crops | features | seconds per round | best | x centre |")
    print("|---|---|---|---|---|")
    for crops in modes:
        rounds = ", ".join(f"{t:.2f}" for t in times[crops])
        print(f"| {crops} | {windows[crops]} | {rounds} | {min(times[crops]):.2f} | {min(times[crops]) / base:.2f} |")


if __name__ == "__main__":
    main()
