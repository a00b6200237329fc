"""An S3-to-S3 run against a local-to-local run of the same videos.

    python -m benchmarks.object_store_run --videos 4 --seconds 10 --rounds 2

Starts moto's standalone S3 server on 127.0.0.1 in this process, uploads the synthetic videos
(:mod:`benchmarks.make_dataset`, 360p, 25 fps), then times the command line as users run it
(defaults, ``device=cpu``, random weights, ``save_numpy``), one fresh process per run: local
paths into a fresh local folder, then ``s3://`` URLs into a fresh ``s3://`` prefix (claims,
records, features and the run report all in the store), in turns for ``--rounds`` rounds.
Each run must report every video done. The store is on loopback, so this measures what the
object path costs the product (requests, ranged reads, the client's work), not a network.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.make_dataset import _spec, make_dataset
from r21d_features.utils.core.cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench-videos"


def _statuses(out: Path | str, client: Any) -> list[str]:
    if isinstance(out, Path):
        reports = [report.read_bytes() for report in out.rglob("run_report.jsonl")]
    else:
        found = client.list_objects_v2(Bucket=BUCKET, Prefix=out.split("/", 3)[3] + "/").get("Contents", [])
        reports = [client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in found
                   if item["Key"].endswith("run_report.jsonl")]
    return [json.loads(line)["status"] for report in reports for line in report.splitlines()]


def _clear(out: Path | str, client: Any) -> None:
    """A finished output would be skipped, not timed: every run starts from an empty location."""
    if isinstance(out, Path):
        shutil.rmtree(out, ignore_errors=True)
        return
    for item in client.list_objects_v2(Bucket=BUCKET, Prefix=out.split("/", 3)[3] + "/").get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])


def _run(video_names: list[str], out: Path | str, tmp: Path, env: dict[str, str], client: Any) -> float:
    _clear(out, client)
    listed = "[" + ", ".join(f"'{name}'" for name in video_names) + "]"
    argv = ["feature_type=r21d", "device=cpu", "random_weights=true", "progress=false", f"video_paths={listed}",
            "on_extraction=save_numpy", f"output_path={out}", f"tmp_path={tmp}"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, capture_output=True,
                          text=True, env=env)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {proc.stderr.strip()[-800:]}")
    statuses = _statuses(out, client)
    if statuses != ["done"] * len(video_names):
        raise RuntimeError(f"expected {len(video_names)} extractions, the run report says {statuses}")
    return wall_s


def measure(videos: int, seconds: int, rounds: int, work: Path) -> dict[str, Any]:
    import boto3  # noqa: PLC0415 (the test extra)
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    specs = [_spec("360p", seconds, 25, index) for index in range(videos)]
    paths = make_dataset("object-store", work / "videos", specs=specs)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONWARNINGS": "ignore"}
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench",
                              aws_secret_access_key="bench", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        urls = []
        for path in paths:
            client.upload_file(str(path), BUCKET, f"videos/{path.name}")
            urls.append(f"s3://{BUCKET}/videos/{path.name}")
        times: dict[str, list[float]] = {"local to local": [], "s3 to s3": []}
        for r in range(rounds):
            for kind, names, out in (("local to local", [str(p) for p in paths], work / "out_local"),
                                     ("s3 to s3", urls, f"s3://{BUCKET}/features")):
                wall_s = _run(names, out, work / "tmp", env, client)
                times[kind].append(wall_s)
                print(f"  round {r + 1} {kind}: {wall_s:.1f} s", flush=True)
    finally:
        server.stop()
    frames = sum(spec.num_frames for spec in specs)
    rows = []
    for kind, walls in times.items():
        median = statistics.median(walls)
        rows.append({"input": kind, "videos": videos, "frames": frames, "wall_s": walls, "median_s": median,
                     "videos_per_s": videos / median, "frames_per_s": frames / median})
    return {"videos": videos, "seconds_each": seconds, "resolution": "360p", "rounds": rounds, "rows": rows,
            "cpu": cpu_info().describe(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown_table(report: dict[str, Any]) -> str:
    lines = ["| videos from, features to | videos | frames | wall s (median of rounds) | videos/s | frames/s |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['input']} | {row['videos']} | {row['frames']} | {row['median_s']:.1f} "
                     f"| {row['videos_per_s']:.3f} | {row['frames_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "bench_out" / "object_store")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = measure(args.videos, args.seconds, args.rounds, args.work)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
