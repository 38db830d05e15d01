#!/usr/bin/env bash
# On a lent GPU: time to 99.0% test accuracy with `--recipe fast` (after a warm-up run, so CUDA start-up and
# compilation are excluded) and training images/s after warm-up, for a few engine settings. Writes
# benchmarks/results/gpu.json (and $OUT/gpu.json when $OUT is set, as on the lent machine).
# Usage: benchmarks/gpu.sh            (about 3-5 minutes on an H100; needs torch with CUDA and lenet importable)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import lenet" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p benchmarks/results
$PY - benchmarks/results/gpu.json "${OUT:-}" <<'PYEOF'
import io, json, statistics, sys, time
import torch
import lenet
from lenet.bench import bench_inference, bench_lenet
from lenet.trainer import fit, make_config

assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA GPU"
device = torch.device("cuda")
SEEDS = [0, 1, 2, 3, 4]
# Engine settings tried with the fast recipe; the fastest one that reaches 99.0% on every seed is reported.
VARIANTS = {"eager_fp32": {"precision": "fp32"}, "eager_bf16": {"precision": "bf16"},
            "compiled_fp32_cudagraphs": {"precision": "fp32", "compile": True},
            "compiled_bf16_cudagraphs": {"precision": "bf16", "compile": True}}


def run(seed, **options):
    cfg = make_config("fast", device="cuda", seed=seed, **options)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fit(cfg, stream=io.StringIO(), progress_bar=False)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    # training = the epochs themselves; total adds loading MNIST from the .gz files and the test pass
    return {"seed": seed, "test_accuracy": r.test.accuracy, "train_seconds": sum(m["seconds"] for m in r.history),
            "total_seconds": total}


result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "lenet": lenet.__version__,
          "recipe": "fast", "variants": {}}
for name, options in VARIANTS.items():
    t0 = time.perf_counter()
    try:
        run(100, **options)  # warm-up: CUDA context, cuDNN autotuning, torch.compile (cached in-process)
        warmup = time.perf_counter() - t0
        runs = [run(s, **options) for s in SEEDS]
    except Exception as e:  # one variant failing (e.g. CUDA graphs on an old driver) must not lose the others
        result["variants"][name] = {"error": f"{type(e).__name__}: {e}"}
        print(name, "failed:", e, flush=True)
        continue
    accs = [r["test_accuracy"] for r in runs]
    entry = {"options": options, "warmup_seconds": warmup, "runs": runs,
             "accuracy_mean": statistics.mean(accs), "accuracy_min": min(accs),
             "train_seconds_median": statistics.median(r["train_seconds"] for r in runs),
             "total_seconds_median": statistics.median(r["total_seconds"] for r in runs),
             "all_at_least_99": min(accs) >= 99.0}
    result["variants"][name] = entry
    print(name, json.dumps({k: v for k, v in entry.items() if k != "runs"}), flush=True)

ok = {k: v for k, v in result["variants"].items() if v.get("all_at_least_99")}
if ok:
    best = min(ok, key=lambda k: ok[k]["train_seconds_median"])
    result["best"] = {"variant": best, "time_to_99_seconds": ok[best]["train_seconds_median"],
                      "time_to_99_seconds_incl_data_and_test": ok[best]["total_seconds_median"],
                      "target": "<= 0.5 s on an H100"}

# Training throughput after warm-up: fit()'s own per-epoch images/s at large batches, first epoch excluded.
result["throughput"] = {}
for bs in (512, 2048):
    for name, options in (("eager_bf16", {"precision": "bf16"}), ("compiled_bf16_cudagraphs",
                                                                  {"precision": "bf16", "compile": True})):
        samples, first = bench_lenet(5, None, batch_size=bs, device="cuda", **options)
        result["throughput"][f"{name}_bs{bs}"] = {"images_per_s": statistics.median(samples), "samples": samples,
                                                  "first_epoch_seconds": first}
        print("throughput", name, bs, f"{statistics.median(samples):,.0f} images/s", flush=True)
samples, latency = bench_inference(device, 10000, 5, 200)
result["inference_images_per_s"], result["latency_ms"] = statistics.median(samples), latency

text = json.dumps(result, indent=2)
for path in filter(None, sys.argv[1:]):
    target = path if path.endswith(".json") else f"{path}/gpu.json"
    with open(target, "w") as f:
        f.write(text)
print(json.dumps(result.get("best", "no variant reached 99.0% on every seed")))
PYEOF
