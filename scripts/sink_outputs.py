"""Every sink's output on the samples, as a manifest that two versions of the product can be compared by.

    python scripts/sink_outputs.py write OUT_DIR        # runs `python main.py ...` once per case below
    python scripts/sink_outputs.py write OUT_DIR --set batch_size=16   # the same, one key changed in every case
    python scripts/sink_outputs.py compare OLD_DIR NEW_DIR

Each case is one command line as a user types it (random seeded weights on the CPU, so it runs
offline), run in ``OUT_DIR/<case>/`` with relative paths. ``manifest.json`` then holds, per case,
the exit status, stdout, stderr, and a digest of every file written: the bytes of ``.npy`` /
``.pkl`` files; for provenance records their entries; for the run report each line without its
time, pid and seconds; for HDF5 parts every dataset's bytes and attributes without the write
time. What differs between two runs of the same version by nature (times, pids, part-file names)
is left out; everything a user reads or loads is compared. ``compare`` prints every difference
and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ["bbb_4x3_25fps.mp4", "bbb_16x9_30fps.mp4"]
BASE = ["feature_type=r21d", "device=cpu", "random_weights=true", "progress=false"]
BOTH = "video_paths=[in/bbb_4x3_25fps.mp4,in/bbb_16x9_30fps.mp4]"
MISSING = "video_paths=[in/bbb_4x3_25fps.mp4,in/missing.mp4,in/bbb_16x9_30fps.mp4]"

CASES: dict[str, list[str]] = {
    "print": [MISSING],
    "print_pred": [BOTH, "show_pred=true"],
    "print_list": ["file_with_video_paths=in/list.txt"],
    "numpy": [BOTH, "on_extraction=save_numpy"],
    "numpy_meta": [BOTH, "on_extraction=save_numpy", "save_metadata=true"],
    "pickle": [BOTH, "on_extraction=save_pickle"],
    "pickle_meta": [BOTH, "on_extraction=save_pickle", "save_metadata=true"],
    "hdf5": [BOTH, "on_extraction=save_hdf5"],
    "hdf5_meta": [BOTH, "on_extraction=save_hdf5", "save_metadata=true"],
    "numpy_five": [BOTH, "on_extraction=save_numpy", "crops=five"],
    "pickle_ten": [BOTH, "on_extraction=save_pickle", "crops=ten", "save_metadata=true"],
    "hdf5_ten": [BOTH, "on_extraction=save_hdf5", "crops=ten"],
    "print_five": [BOTH, "crops=five"],
    "numpy_root": ["video_paths=[tree/a/clip.mp4,tree/b/clip.mp4]", "video_root=tree", "on_extraction=save_numpy",
                   "save_metadata=true"],
    "hdf5_root": ["video_paths=[tree/a/clip.mp4,tree/b/clip.mp4]", "video_root=tree", "on_extraction=save_hdf5"],
    "numpy_window": [BOTH, "on_extraction=save_numpy", "stack_size=8", "step_size=4", "batch_size=4"],
    "numpy_fps": [BOTH, "on_extraction=save_numpy", "extraction_fps=10", "save_metadata=true"],
    "numpy_opencv": [BOTH, "on_extraction=save_numpy", "decoder=opencv"],
    "numpy_bf16": [BOTH, "on_extraction=save_numpy", "precision=bf16"],
    "numpy_r34": ["video_paths=[in/bbb_4x3_25fps.mp4]", "on_extraction=save_numpy",
                  "model_name=r2plus1d_34_8_ig65m_ft_kinetics"],
    "bad_key": [BOTH, "stack_sise=4"],
    "bad_value": [BOTH, "stack_size=0"],
    "bad_type": [BOTH, "batch_size=two"],
}
# The same command twice in one folder: the second run skips what the first saved.
RERUN = {"numpy", "hdf5"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hdf5_digest(path: Path) -> dict:
    import h5py  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    out = {}
    with h5py.File(path, "r", locking=False) as f:
        def visit(name: str, obj: object) -> None:
            if not hasattr(obj, "shape"):
                return
            attrs = {}
            for key, value in sorted(obj.attrs.items()):
                if key == "written_at":
                    continue
                value = np.asarray(value)
                attrs[key] = [str(value.dtype), list(value.shape), _sha(value.tobytes())]
            out[name] = {"dtype": str(obj.dtype), "shape": list(obj.shape), "data": _sha(obj[()].tobytes()),
                         "attrs": attrs}
        f.visititems(visit)
    return out


def _file_digest(path: Path) -> object:
    data = path.read_bytes()
    if path.name.endswith(".provenance.json"):
        return {"entries": json.loads(data)["entries"]}
    if path.name == "run_report.jsonl":
        lines = []
        for line in data.decode("utf-8").splitlines():
            record = json.loads(line)
            for key in ("time", "pid", "seconds", "host"):
                record.pop(key, None)
            lines.append(record)
        return sorted(lines, key=lambda r: json.dumps(r, sort_keys=True))
    if path.suffix == ".h5":
        return _hdf5_digest(path)
    return _sha(data)


def _tree_digest(folder: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".h5" and path.name.startswith("features.part-"):
            rel = rel.rsplit("/", 1)[0] + "/features.part-*.h5" if "/" in rel else "features.part-*.h5"
        out[rel] = _file_digest(path)
    return out


def _prepare_inputs(case_dir: Path) -> None:
    (case_dir / "in").mkdir(parents=True)
    for name in SAMPLES:
        shutil.copy(REPO / "sample" / name, case_dir / "in" / name)
    (case_dir / "in" / "list.txt").write_text("in/bbb_4x3_25fps.mp4\n\n# a comment\nin/bbb_16x9_30fps.mp4\n")
    for sub, name in (("a", SAMPLES[0]), ("b", SAMPLES[1])):
        (case_dir / "tree" / sub).mkdir(parents=True)
        shutil.copy(REPO / "sample" / name, case_dir / "tree" / sub / "clip.mp4")


def _run(case_dir: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", "COLUMNS": "120"}
    done = subprocess.run([sys.executable, str(REPO / "main.py"), *BASE, *args], cwd=case_dir, env=env,
                          capture_output=True, text=True, timeout=900)
    return {"args": args, "exit": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def with_settings(args: list[str], settings: list[str]) -> list[str]:
    """``args`` plus each ``KEY=VALUE`` of ``settings`` whose key the case does not set itself."""
    own = {arg.split("=", 1)[0] for arg in args}
    return [*args, *(s for s in settings if s.split("=", 1)[0] not in own)]


def write(out: Path, settings: list[str] = ()) -> None:
    if out.exists():
        shutil.rmtree(out)
    manifest = {}
    for name, case_args in CASES.items():
        args = with_settings(case_args, list(settings))
        case_dir = out / name
        _prepare_inputs(case_dir)
        runs = [_run(case_dir, args)]
        if name in RERUN:
            runs.append(_run(case_dir, args))
        files = {rel: d for rel, d in _tree_digest(case_dir).items()
                 if not rel.startswith(("in/", "tree/"))}
        manifest[name] = {"runs": runs, "files": files}
        print(f"{name}: exit {[r['exit'] for r in runs]}, {len(files)} files", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


_PART_NAME = re.compile(r"features\.part-[^/\s]+?-\d+-\d+\.h5")


def _console(text: str) -> str:
    """Console text with HDF5 part names (host and pid in them) wildcarded."""
    return _PART_NAME.sub("features.part-*.h5", text)


def compare(old: Path, new: Path) -> int:
    a = json.loads((old / "manifest.json").read_text())
    b = json.loads((new / "manifest.json").read_text())
    problems = []
    for case in sorted(set(a) | set(b)):
        if case not in a or case not in b:
            problems.append(f"{case}: only in {'new' if case in b else 'old'}")
            continue
        for i, (ra, rb) in enumerate(zip(a[case]["runs"], b[case]["runs"])):
            for key in ("exit", "stdout", "stderr"):
                if _console(str(ra[key])) != _console(str(rb[key])):
                    problems.append(f"{case} run {i}: {key} differs\n--- old\n{ra[key]}\n--- new\n{rb[key]}")
        fa, fb = a[case]["files"], b[case]["files"]
        for rel in sorted(set(fa) | set(fb)):
            if fa.get(rel) != fb.get(rel):
                problems.append(f"{case}: {rel} differs ({'missing' if rel not in fa or rel not in fb else 'content'})")
    for line in problems:
        print(line)
    cases = len(set(a) & set(b))
    files = sum(len(a[c]["files"]) for c in set(a) & set(b))
    print(f"{cases} cases, {files} files compared: {len(problems)} difference(s)")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    writer = sub.add_parser("write")
    writer.add_argument("out", type=Path)
    writer.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="add this setting to every case that does not set the key itself")
    cmp = sub.add_parser("compare")
    cmp.add_argument("old", type=Path)
    cmp.add_argument("new", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out, args.settings)
        return 0
    return compare(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
