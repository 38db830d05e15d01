"""The CPU thread count of a training run, adapted while it runs by timing its own steps.

Why adapt: torch's OpenMP threads meet at a barrier after every operator, so when another process holds a
core, every barrier waits for a scheduler time slice and N threads can run 10x slower than one (measured on
2 shared cores: 2 threads 1.5k images/s, 1 thread 14k; benchmarks/README.md). On idle cores more threads are
faster. Which count wins changes whenever other processes start or stop, so a choice made once at start (the
old 50-ms /proc/loadavg snapshot) is wrong for the rest of the run as soon as the machine changes.

How: the run's own training steps are the measurement, so probing wastes no work. A probe runs each candidate
count (1..usable cores; see `candidates`) for a short window of steps and keeps the fastest, switching only when
it is measurably faster than the current count (hysteresis, so noise cannot flip it back and forth). A probe
runs at the start, at every epoch start, and whenever the median step rate of the last few steps moves away
from the chosen count's probe rate (the machine changed). After the start, a probe tries more threads than
the chosen count only when the last window left cores idle (the kernel's idle time, `IdleMeter`): beside a
busy core such a trial costs steps at a twentieth of the speed, to learn what the idle time already says.
Between probes a step costs a clock read, a counter and a list store, and every `window` steps a read of
/proc/stat.

    ThreadDecider  the decisions: step durations (and idle cores) in, thread counts out. Pure, so tests drive
                   it with fake times
    IdleMeter      the machine's idle cores between two samples (Linux /proc/stat)
    ThreadPolicy   the clock, the idle meter, torch.set_num_threads, the log lines and the per-epoch metrics
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import TrainConfig, usable_cores


@dataclass(frozen=True)
class Settings:
    """The policy's constants. A probe window per candidate: at least `min_steps` timed steps and
    `min_seconds`, unless `cap_steps` steps come first; ended after `max_seconds` with 2 steps or more."""

    min_steps: int = 8
    min_seconds: float = 0.1
    max_seconds: float = 1.0
    # The step after set_num_threads is not timed (the thread pool resizes), unless it is 2 x `collapsed`
    # slower than the best count: beside a busy core, 2 threads took 0.5 s for a 25-ms step of batch 512.
    skip_after_switch: int = 1
    skip_at_start: int = 3  # nor the run's first steps (measured: 10-100x slower, first calls allocate and plan)
    window: int = 16  # steps between two checks of the steady state
    drift: float = 1.3  # re-probe when a window's median rate is this factor off the chosen count's probe rate
    margin: float = 1.1  # switch only to a count this factor faster than the current one in the same probe
    hopeless: float = 2.0  # a count this factor slower than one already probed, after 3 steps, cannot win
    # In the probes after the first (every epoch's, a drift's), where a count was chosen: a count this factor
    # slower than the best so far after 3 steps is cut too. It would have to come out `margin` faster to be
    # chosen; on idle cores the short epochs of batch 1024 lost 5-7 % of their time to full-length probes of
    # the slower count (lenet bench, Intel Xeon, 2026-12-04).
    behind: float = 1.25
    # A count this factor slower than the best so far is cut after its first timed step: 2 threads beside a
    # busy core ran 10-40x slower (batch 8: up to 0.17 s a step), so even 3 steps of it cost an epoch 5-10 %.
    collapsed: float = 8.0
    # After the start, a probe tries a count above the chosen one only when the CPU had this many idle cores
    # per extra thread in the last window (where the OS tells: /proc/stat). Beside a busy core, every probe of
    # 2 threads cost two steps at 1/20 of the speed: three drift probes an epoch (the busy core's noise moves
    # the 1-thread rate 2x) halved `--recipe speedrun`'s speed (Intel Xeon, 2026-12-05).
    spare_per_thread: float = 0.5


def candidates(cores: int) -> list[int]:
    """The counts a probe tries: every count up to 4 cores; beyond, the powers of two and the top two (one
    core held by another process is the common case), so a probe stays short on a big machine."""
    if cores <= 4:
        return list(range(1, cores + 1))
    counts = {cores, cores - 1} | {2**i for i in range(cores.bit_length()) if 2**i < cores}
    return sorted(counts)


@dataclass(frozen=True)
class ProbeResult:
    """A finished probe: why it ran, the images/s of each count, the count before and the one chosen."""

    reason: str
    rates: dict[int, float]
    before: int
    chosen: int


@dataclass
class _Probe:
    reason: str
    order: list[int]
    rates: dict[int, float] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)  # images/s of the timed steps of the count on trial
    seconds: float = 0.0
    skip: int = 0


def choose(rates: dict[int, float], current: int | None, margin: float) -> int:
    """The count to run: the fastest when it beats `current` by `margin`, else `current`. With no current
    count (the run's start), the fewest threads within `margin` of the fastest: they leave cores to others
    and lose least when another process arrives."""
    best = max(rates, key=rates.__getitem__)
    if current is None:
        return min(n for n, rate in rates.items() if rate * margin >= rates[best])
    return best if rates[best] > margin * rates.get(current, 0.0) else current


class ThreadDecider:
    """When to probe and which count to run, from step durations alone.

    `observe(images, seconds)` after every step returns the count to run next (the same one most steps);
    `finished` holds the probes that ended, for the caller to report."""

    def __init__(self, counts: list[int], start: int, steps_per_epoch: int, settings: Settings = Settings()):
        self.counts, self.settings = counts, settings
        self.current: int = start  # the count running now (during a probe: the one on trial)
        self.chosen: int | None = None  # the count the last probe chose
        self.reference = 0.0  # the chosen count's images/s in that probe
        self.cap_steps = max(settings.min_steps, steps_per_epoch // (4 * len(counts)))
        self.probe: _Probe | None = None
        self.recent: list[float] = []
        self.finished: list[ProbeResult] = []
        self.spare_cores: float | None = None  # idle cores in the last window, set by the caller (None: unknown)

    def start_probe(self, reason: str, rate: float | None = None) -> int:
        """Begin a probe (unless one is running), the chosen count first (at the start: 1 thread, which no other
        process can stall, so a collapsed count is cut short); with its `rate` (images/s) known from the last
        steps, the probe starts at the next count. Returns the count to run."""
        if self.probe is None:
            first = self.chosen if self.chosen is not None else self.counts[0]
            others = [n for n in self.counts if n != first and self._may_try(n)]
            order = [first] + sorted(others, reverse=self.chosen is not None)
            skip = self.settings.skip_at_start if self.chosen is None else self.settings.skip_after_switch
            self.probe = _Probe(reason, order, skip=skip)
            self.current = first
            if rate is not None:
                self.probe.rates[first] = rate
                return self._next_candidate(self.probe)
        return self.current

    def _may_try(self, count: int) -> bool:
        """Whether a probe tries `count`: always at the start and below the chosen count; above it, only when
        the last window left enough idle cores for the extra threads (or nobody could tell)."""
        if self.chosen is None or count <= self.chosen or self.spare_cores is None:
            return True
        return self.spare_cores >= (count - self.chosen) * self.settings.spare_per_thread

    def observe(self, images: int, seconds: float) -> int:
        if self.probe is not None:
            return self._probe_step(self.probe, images / max(seconds, 1e-9), seconds)
        self.recent.append(images / max(seconds, 1e-9))
        if len(self.recent) >= self.settings.window:
            rate = statistics.median(self.recent)
            self.recent.clear()
            factor = self.reference / rate if self.reference else 1.0
            if factor > self.settings.drift:
                return self.start_probe(f"steps slowed {factor:.1f}x", rate)
            if 1 / factor > self.settings.drift:
                return self.start_probe(f"steps sped up {1 / factor:.1f}x", rate)
        return self.current

    def conclude(self) -> int:
        """End a running probe with what it measured (the run ends before its windows do)."""
        probe = self.probe
        if probe is not None:
            if probe.samples:
                probe.rates[self.current] = statistics.median(probe.samples)
            if probe.rates:
                return self._decide(probe)
            self.probe = None
        return self.current

    def _probe_step(self, probe: _Probe, rate: float, seconds: float) -> int:
        if probe.skip:
            probe.skip -= 1
            best = max(probe.rates.values(), default=0.0)
            if rate * 2 * self.settings.collapsed < best:  # collapsed even allowing for the switch's cost
                probe.rates[self.current] = rate
                return self._next_candidate(probe)
            return self.current
        probe.samples.append(rate)
        probe.seconds += seconds
        if not self._window_done(probe):
            return self.current
        probe.rates[self.current] = statistics.median(probe.samples)
        return self._next_candidate(probe)

    def _next_candidate(self, probe: _Probe) -> int:
        if len(probe.rates) == len(probe.order):
            return self._decide(probe)
        self.current = probe.order[len(probe.rates)]
        probe.samples, probe.seconds, probe.skip = [], 0.0, self.settings.skip_after_switch
        return self.current

    def _window_done(self, probe: _Probe) -> bool:
        s, steps = self.settings, len(probe.samples)
        if steps >= 2 and probe.seconds >= s.max_seconds:
            return True
        rate, best = statistics.median(probe.samples), max(probe.rates.values(), default=0.0)
        if rate * s.collapsed < best:
            return True
        cut = s.hopeless if self.chosen is None else s.behind
        if steps >= 3 and rate * cut < best:
            return True  # cut short: beside a busy core N threads run 10x slower, and every epoch probes them
        return steps >= s.min_steps and (probe.seconds >= s.min_seconds or steps >= self.cap_steps)

    def _decide(self, probe: _Probe) -> int:
        before = self.chosen
        self.chosen = choose(probe.rates, before if before in probe.rates else None, self.settings.margin)
        self.reference = probe.rates[self.chosen]
        self.finished.append(ProbeResult(probe.reason, dict(probe.rates), before or self.chosen, self.chosen))
        self.probe, self.current = None, self.chosen
        self.recent.clear()
        return self.current


Say = Callable[[str], None]


class IdleMeter:
    """Idle cores of the machine between two `sample()` calls, from the kernel's per-CPU time counters
    (Linux /proc/stat: idle + iowait jiffies over the wall time); None where they cannot be read or on the
    first call. About 30 us a call."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self.last: tuple[float, float] | None = None
        try:
            self.tick = os.sysconf("SC_CLK_TCK")  # jiffies per second, fixed for the machine's life
        except (ValueError, OSError, AttributeError):  # not a POSIX system: no /proc/stat either
            self.tick = 0

    def sample(self) -> float | None:
        now = time.perf_counter()
        try:
            with open(self.path, encoding="ascii") as f:
                fields = f.readline().split()
            idle = (int(fields[4]) + int(fields[5])) / self.tick
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            return None
        before, self.last = self.last, (now, idle)
        if before is None or now - before[0] <= 0:
            return None
        return max(0.0, (idle - before[1]) / (now - before[0]))


class ThreadPolicy:
    """The thread count of one run: fixed (`--threads`, `--deterministic`, not a CPU) or adapted by a
    ThreadDecider. The loop calls `begin_epoch` before an epoch's first step, `step` after every step,
    `end_epoch` for the epoch's metrics and `close` when training ends."""

    def __init__(self, decider: ThreadDecider | None, say: Say):
        self.decider, self.say = decider, say
        self.idle = IdleMeter()
        self.threads = torch.get_num_threads()  # what the process runs now; fixed policies keep it
        self.epoch, self.step_in_epoch, self.last = 0, 0, time.perf_counter()
        self.used: Counter[int] = Counter()
        self.switches = 0

    @classmethod
    def for_run(cls, cfg: TrainConfig, device: torch.device, steps_per_epoch: int, say: Say) -> ThreadPolicy:
        """Adaptive on a CPU unless `cfg` pins the count (--threads) or fixes it (--deterministic: the thread
        count changes the order of reductions, so the bits)."""
        if device.type != "cpu" or cfg.threads or cfg.deterministic:
            return cls(None, say)
        counts = candidates(usable_cores())
        return cls(ThreadDecider(counts, counts[-1], steps_per_epoch), say)

    def begin_epoch(self, epoch: int, step: int = 0) -> None:
        """Epoch `epoch` (0-based) starts at `step`: re-probe (the machine may have changed meanwhile)."""
        self.epoch, self.step_in_epoch = epoch, step
        if self.decider is not None:
            self.decider.spare_cores = self.idle.sample()
            self._run(self.decider.start_probe("start" if self.decider.chosen is None else "epoch start"))
        self.last = time.perf_counter()

    def step(self, images: int) -> None:
        """After each training step of `images` images."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.step_in_epoch += 1
        self.used[self.threads] += 1
        if self.decider is not None:
            if self.step_in_epoch % self.decider.settings.window == 0:
                self.decider.spare_cores = self.idle.sample()
            threads = self.decider.observe(images, seconds)
            if threads != self.threads or self.decider.finished:
                self._run(threads)

    def end_epoch(self) -> dict[str, int]:
        """The epoch's thread metrics: the count most of its steps ran with, and how often the chosen count
        changed."""
        metrics = {"threads": self.used.most_common(1)[0][0] if self.used else self.threads,
                   "thread_switches": self.switches}
        self.used.clear()
        self.switches = 0
        return metrics

    def close(self) -> None:
        """Report a probe the run ended before it finished."""
        if self.decider is not None:
            self._run(self.decider.conclude())

    def _run(self, threads: int) -> None:
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        for result in self.decider.finished:
            self._report(result)
        self.decider.finished.clear()
        self.last = time.perf_counter()  # set_num_threads and the log line are not the next step's time

    def _report(self, result: ProbeResult) -> None:
        rates = sorted(result.rates.items())
        probe = ", ".join(f"{n} -> {_k(rate)}{' images/s' if i == 0 else ''}" for i, (n, rate) in enumerate(rates))
        if result.reason == "start":
            self.say(f"threads: {result.chosen} (probe: {probe})")
        elif result.chosen != result.before:
            self.switches += 1
            self.say(f"threads: {result.before} -> {result.chosen} in epoch {self.epoch + 1} at step "
                     f"{self.step_in_epoch}: {result.reason} (probe: {probe})")


def _k(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"
