"""What a process pays before and after its real work, measured from outside, in one sitting:
`import torch` alone, `lenet predict one.png` through the shipped ONNX graph and through torch, and a
`lenet train` of no epochs' worth of work (`--train-size 512 --epochs 1`: interpreter, imports, data,
network, one tiny epoch, evaluation, the run folder).

    python benchmarks/startup.py [--repeats 7] [--json benchmarks/results/startup.json]

Each command runs `--repeats` times, alternating, as a fresh process; the median and the range are
printed (wall time from spawn to exit). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from lenet.hardware import detect_cpu
from lenet.idx import SHIPPED_MNIST, read_idx


def one_png(folder: Path) -> Path:
    """The first MNIST test digit, dark on white, 112x112: an image as a user has one."""
    images = read_idx(SHIPPED_MNIST / "t10k-images-idx3-ubyte.gz", 2051, 10000)
    path = folder / "one.png"
    Image.fromarray(255 - images[0]).resize((112, 112)).save(path)
    return path


def commands(png: Path, out: Path) -> dict[str, list[str]]:
    lenet = [sys.executable, "-m", "lenet"]
    return {
        "import torch": [sys.executable, "-c", "import torch"],
        "lenet predict one.png (onnxruntime)": [*lenet, "predict", str(png)],
        "lenet predict one.png --runtime torch": [*lenet, "predict", str(png), "--runtime", "torch"],
        "lenet train (512 images, 1 epoch)": [*lenet, "train", "--recipe", "speedrun", "--train-size", "512",
                                              "--epochs", "1", "--threads", "2", "--out", str(out), "--overwrite",
                                              "--no-progress"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="append this sitting to FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = commands(one_png(Path(tmp)), Path(tmp) / "run")
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, argv in runs.items():
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    cpu = detect_cpu().model
    print(f"{cpu}, {args.repeats} runs each, spawn to exit:")
    result = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu,
              "python": sys.version.split()[0], "seconds": {}}
    for name, values in times.items():
        median = statistics.median(values)
        result["seconds"][name] = {"median": round(median, 3), "min": round(min(values), 3),
                                   "max": round(max(values), 3)}
        print(f"  {name:42s} median {median:5.2f} s  (range {min(values):.2f}-{max(values):.2f})")
    if args.json:
        path = Path(args.json)
        sittings = json.loads(path.read_text())["sittings"] if path.exists() else []
        path.write_text(json.dumps({"sittings": [*sittings, result]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
