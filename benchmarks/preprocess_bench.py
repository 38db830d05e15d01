"""Photo preprocessing, old pipeline vs new, side by side in one sitting: milliseconds per photo (median and
p95) for 12 MP and 1 MP JPEG phone photos of a notebook page, on one core, and how many digits each reads
right on the same photos.

    python benchmarks/preprocess_bench.py [--count-12mp 20] [--count-1mp 40] [--accuracy 300] [--load]
                                          [--skimage] [--json benchmarks/results/preprocess.json]

old      benchmarks/_predict_before.py: a frozen copy of src/lenet/predict.py before the photos work (251e5c4):
         global Otsu threshold on a 512 px copy, one crop of all the ink
new      lenet.predict: illumination divided out, rulings and the page's edge removed, components kept
         by shape and place (`preprocess`, what `lenet predict` runs; `find_digits`, what `--number` runs)
skimage  (--skimage) the new pipeline with its OpenCV calls done by scikit-image and SciPy
         (benchmarks/_cv2_via_skimage.py), to measure the choice of library

The photos are tests/photo_generator.py's (real MNIST test digits, seeded), decoded once with
`lenet.predict.open_image`; decoding is timed apart (it is the same for every pipeline). Each photo is
preprocessed by every pipeline in turn, three times, and the median of its three runs counts. `--load` times
everything a second time with a competing busy process (`python -c "while True: pass"`) pinned to the same
core as the benchmark (Linux), so that the two share it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

SIZES = {"12MP": (4000, 3000), "1MP": (1155, 866)}


def one_core() -> None:
    """Every library on one thread: the target is for one core."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def load(path: Path, name: str, replace: tuple[str, str] | None = None):
    """A module from a file (the frozen old pipeline), or lenet.predict's source with `replace` applied."""
    source = path.read_text(encoding="utf-8")
    if replace:
        source = source.replace(*replace)
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "lenet"  # lenet.predict's relative imports
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def pipelines(with_skimage: bool) -> dict:
    import lenet.predict as new

    old = load(ROOT / "benchmarks" / "_predict_before.py", "lenet._predict_before")
    found = {"old": old.preprocess, "new": new.preprocess, "new find_digits": new.find_digits}
    if with_skimage:
        skimage = load(ROOT / "src" / "lenet" / "predict.py", "lenet._predict_skimage",
                       ("    import cv2\n", "    import _cv2_via_skimage as cv2\n"))
        found["skimage"] = skimage.preprocess
    return found


def jpeg(photo) -> bytes:
    """The photo as a JPEG (the generator writes a few PNGs; phones write JPEG)."""
    if photo.format == "JPEG":
        return photo.data
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(photo.data)).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def time_photos(data: list[bytes], runs: dict, repeats: int = 3) -> dict:
    """ms per photo for each pipeline (median of `repeats` runs), and decoding."""
    from lenet.errors import ImageError
    from lenet.predict import open_image

    times: dict[str, list[float]] = {name: [] for name in ["decode", *runs]}
    for blob in data:
        start = time.perf_counter()
        image = open_image(blob)
        times["decode"].append((time.perf_counter() - start) * 1000)
        for name, run in runs.items():
            each = []
            for _ in range(repeats):
                start = time.perf_counter()
                with contextlib.suppress(ImageError):  # an unreadable photo takes its time too
                    run(image)
                each.append((time.perf_counter() - start) * 1000)
            times[name].append(float(np.median(each)))
    return {name: {"median_ms": round(float(np.median(v)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2),
                   "photos": len(v)} for name, v in times.items()}


def accuracy(photo_list: list, runs: dict, model) -> dict:
    """Percent of single-digit photos each pipeline's 28x28 is read right, shipped `seed` weights."""
    import torch

    from lenet import inference
    from lenet.errors import ImageError
    from lenet.predict import open_image

    result = {}
    for name, run in runs.items():
        if name == "new find_digits":
            continue
        images = []
        for photo in photo_list:
            try:
                images.append(torch.as_tensor(np.asarray(run(open_image(photo.data)))))
            except ImageError:
                images.append(torch.zeros(28, 28, dtype=torch.uint8))
        guesses = inference.probabilities(model, torch.stack(images)).argmax(1).tolist()
        right = [g == p.labels[0] for g, p in zip(guesses, photo_list, strict=True)]
        result[name] = round(100 * float(np.mean(right)), 1)
    return result


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields['Model name'].strip()}, {fields['CPU(s)'].strip()} CPUs ({platform.machine()})"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def sitting(args, runs: dict, sets: dict) -> dict:
    timings = {label: time_photos(data, runs) for label, data in sets.items()}
    return {"load_average": [round(v, 2) for v in os.getloadavg()], "timings": timings}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count-12mp", type=int, default=20)
    parser.add_argument("--count-1mp", type=int, default=40)
    parser.add_argument("--accuracy", type=int, default=300, help="single-digit photos for the accuracy column")
    parser.add_argument("--skimage", action="store_true", help="also time the scikit-image variant")
    parser.add_argument("--load", action="store_true", help="time again with a competing busy process")
    parser.add_argument("--seed", type=int, default=1313)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    one_core()
    from photo_generator import photos

    import lenet
    from lenet.weights import load_network

    test = lenet.load_dataset("mnist").test
    runs = pipelines(args.skimage)
    counts = {"12MP": args.count_12mp, "1MP": args.count_1mp}
    sets = {label: [jpeg(p) for p in photos(test, counts[label], args.seed + n, size=SIZES[label])]
            for n, label in enumerate(SIZES)}
    report = {"cpu": cpu_name(), "threads": 1, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "idle": sitting(args, runs, sets)}
    if args.load:
        # The busy process and this one on the same core: a core shared half and half, the worst case.
        core = {min(os.sched_getaffinity(0))}
        os.sched_setaffinity(0, core)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            os.sched_setaffinity(busy.pid, core)
            time.sleep(1)
            report["sharing the core with one busy process"] = sitting(args, runs, sets)
        finally:
            busy.kill()
            busy.wait()
    accuracy_set = list(photos(test, args.accuracy, args.seed + 2, large_every=100))
    report["accuracy_percent"] = {"photos": args.accuracy, "seed": args.seed + 2,
                                  **accuracy(accuracy_set, runs, load_network("seed"))}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
