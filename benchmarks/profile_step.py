"""Where a training step of lenet's engine spends its time: the step `lenet.trainer.fit` runs (resident uint8
data, the chosen kernels, autocast, fused Adam), grouped by operator and input shape.

    python benchmarks/profile_step.py [--batch-size 1024] [--precision bf16] [--kernels auto] [--threads N]
                                      [--timer profiler|wall]

--timer profiler (default): torch.profiler's table, top operators by self CPU time.
--timer wall: every aten call of the step (forward and backward) timed on its own with time.perf_counter
under a dispatch mode; the median per call over the steps, grouped by operator and input shapes. The
profiler has reported some memory-bound operators at three times their real time (benchmarks/README.md, "A
faster training step"); the wall timer adds its own cost between calls, never inside one."""

import argparse
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from lenet.cli.flags import add_train_arguments
from lenet.inference import precision_context, to_input
from lenet.models import get_model
from lenet.optim import build_optimizer
from lenet.trainer.engine import training_network
from lenet.trainer.state import tune_allocator


class WallTimer(TorchDispatchMode):
    """Times each aten call with time.perf_counter (CPU ops are synchronous), keyed by name and input shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds[f"{func.__name__} {shapes}"].append(time.perf_counter() - t0)
        return out


def wall_table(timer: WallTimer, steps: int, rows: int) -> str:
    """Per step: the median call time times the calls per step, largest first, and their sum."""
    per_step = {key: statistics.median(t) * len(t) / steps for key, t in timer.seconds.items()}
    total = sum(per_step.values())
    lines = [f"{ms * 1e3:8.3f} ms  {ms / total:6.1%}  {key}" for key, ms in
             sorted(per_step.items(), key=lambda kv: -kv[1])[:rows]]
    return "\n".join([*lines, f"{total * 1e3:8.3f} ms  sum of the medians over {len(per_step)} operator/shape pairs"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(ap, ["batch_size", "precision", "kernels", "threads"],
                        defaults={"batch_size": 1024, "precision": "bf16", "kernels": "auto"})
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--timer", choices=("profiler", "wall"), default="profiler")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    tune_allocator(cpu)
    torch.manual_seed(0)
    model = get_model("seed").to(memory_format=torch.channels_last)
    net = training_network(model, cpu, args.kernels, args.precision, args.batch_size)
    raw = net is not model  # the matrix-product form reads the uint8 pixels, as in training
    optimizer = build_optimizer("adam", model.parameters(), 1e-3, device=cpu)
    autocast = precision_context(cpu, args.precision)
    images = torch.randint(0, 256, (60000, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (60000,))

    def step() -> None:
        idx = torch.randint(0, 60000, (args.batch_size,))
        batch = images.index_select(0, idx)  # as the trainer gathers
        x = batch if raw else to_input(batch, channels_last=True)
        with autocast():
            loss = F.cross_entropy(net(x), labels.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    per_step = (time.perf_counter() - t0) / args.steps
    print(f"batch {args.batch_size}, {args.precision}, kernels {type(net).__name__}, {torch.get_num_threads()} "
          f"threads: {per_step * 1e3:.2f} ms per step = {args.batch_size / per_step:,.0f} images/s (unprofiled)")
    if args.timer == "wall":
        with WallTimer() as timer:
            for _ in range(args.steps):
                step()
        print(wall_table(timer, args.steps, args.rows))
        return
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                                              max_name_column_width=32, max_shapes_column_width=60))


if __name__ == "__main__":
    main()
