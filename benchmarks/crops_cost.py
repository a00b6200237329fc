"""What multi-crop costs end to end: ``crops=five|ten`` against the default centre crop.

    python -m benchmarks.crops_cost --device cpu [--video sample/bbb_4x3_25fps.mp4] [--rounds 2]

Times ``R21DExtractor.extract_video`` (decode, preprocessing, network, features to the host)
for each ``crops`` value on the same video, in turns, round after round; the model is built
once per mode, outside the timing, and warmed up. Prints a Markdown table: wall and process-CPU
seconds per round and their ratio to the centre run of the same round. Random weights: the cost, not the features.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from r21d_features.models.r21d import R21DExtractor


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
    cpu_s: dict[str, list[float]] = {m: [] for m in modes}  # process CPU time: less hit by other load
    windows = {}
    for ex in extractors.values():  # warm-up (oneDNN primitives, file cache)
        ex.extract_video(args.video)
    for r in range(args.rounds):
        for crops in modes if r % 2 == 0 else modes[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            result = extractors[crops].extract_video(args.video)
            times[crops].append(time.perf_counter() - t0)
            cpu_s[crops].append(time.process_time() - c0)
            windows[crops] = result.features.shape
    base, base_cpu = times[modes[0]], cpu_s[modes[0]]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, {args.model_name}, video {args.video}")
    print("| crops | features | wall s per round | x centre per round | CPU s per round | x centre (CPU) per round |")
    print("|---|---|---|---|---|---|")
    for crops in modes:
        wall = ", ".join(f"{t:.2f}" for t in times[crops])
        ratio = ", ".join(f"{t / b:.2f}" for t, b in zip(times[crops], base))
        cpu = ", ".join(f"{t:.2f}" for t in cpu_s[crops])
        cpu_ratio = ", ".join(f"{t / b:.2f}" for t, b in zip(cpu_s[crops], base_cpu))
        print(f"| {crops} | {windows[crops]} | {wall} | {ratio} | {cpu} | {cpu_ratio} |")

if __name__ == "__main__":
    main()
