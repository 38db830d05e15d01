"""The process-wide state a training run sets, and its restoration.

Training sets torch's thread count, seeds the global RNG, may switch on deterministic algorithms (with
cuDNN's autotuner off and cuBLAS's workspace pinned by an environment variable) and tunes glibc's
allocator. `training_state` sets them for the run and puts every one back afterwards, also when the run
fails, so a notebook or a test that trains keeps its own settings; the allocator tuning is the one
exception and `tune_allocator` says why.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import TrainConfig

# cuBLAS reads this when it creates a handle; ":4096:8" makes its reductions run in a fixed order
# (the setting torch's reproducibility notes give).
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


_ALLOCATOR_TUNED = False


def tune_allocator(device: torch.device) -> None:
    """Keep freed activation buffers in the heap instead of returning them to the OS (glibc only).

    glibc serves blocks above its mmap threshold with fresh mmap'd pages and unmaps them on free, so every
    training step page-faults its large activations in again; at batch 512-1024 that costs 20-30% of a
    step on CPU (measured, benchmarks/README.md). Raising the thresholds only makes freed memory stay
    reusable: no result depends on it.

    It is set once per process and never undone: glibc has no call that reads the thresholds back, so the
    values before cannot be known (MALLOC_MMAP_THRESHOLD_ may have set them), and writing glibc's documented
    defaults (128 KiB) would not restore them either, because any explicit M_MMAP_THRESHOLD switches off
    glibc's dynamic threshold for the rest of the process."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    _ALLOCATOR_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 31)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        pass


@dataclass(frozen=True)
class ProcessState:
    """The settings `training_state` may change, as they were."""

    threads: int
    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None  # only when CUDA was initialised: reading it would initialise it
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_benchmark: bool
    cublas_workspace: str | None

    @classmethod
    def capture(cls) -> ProcessState:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        return cls(threads=torch.get_num_threads(), cpu_rng=torch.get_rng_state(),
                   cuda_rng=torch.cuda.get_rng_state_all() if cuda else None,
                   deterministic=torch.are_deterministic_algorithms_enabled(),
                   deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark,
                   cublas_workspace=os.environ.get(CUBLAS_WORKSPACE))

    def restore(self) -> None:
        torch.set_num_threads(self.threads)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        if deterministic != (self.deterministic, self.deterministic_warn_only):
            # only when the run changed it: the setter imports torch._inductor and torch._dynamo (~1 s), which
            # a run that never asked for deterministic mode (or torch.compile) should not pay
            torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.cublas_workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = self.cublas_workspace


def apply_settings(cfg: TrainConfig, device: torch.device) -> None:
    """Threads (when pinned), the global seed and deterministic mode for `cfg`, then the allocator (in this
    order: the seed before anything draws from the global RNG)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # otherwise the loop's ThreadPolicy sets the count during the run (trainer/threads.py), or keeps the process's
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    tune_allocator(device)


@contextlib.contextmanager
def training_state(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Apply `cfg`'s process-wide settings for the duration of the block; restore them when it ends or fails.

    A CUDA RNG that did not exist before the block (CUDA initialised by the run) is left as the run's seed
    made it: there was no earlier state to go back to."""
    before = ProcessState.capture()
    try:
        apply_settings(cfg, device)
        yield
    finally:
        before.restore()
