"""lenet.trainer.threads: the adaptive thread count. Its decisions are driven here by synthetic step times
(a fake clock: each step takes batch / rate-of-the-count-running seconds), its wiring by short real runs."""

import json
import os
import random
import re

import pytest
import torch

import lenet
from lenet.trainer import fit, make_config, threads
from lenet.trainer.threads import Settings, ThreadDecider, ThreadPolicy, candidates, choose

BATCH = 64
IDLE = {1: 14_000.0, 2: 26_000.0}  # images/s on 2 idle cores (benchmarks/README.md)
LOADED = {1: 13_800.0, 2: 1_500.0}  # another process holding one core: 2 threads wait at every barrier
QUICK = Settings(min_steps=8, min_seconds=0.02, skip_at_start=1)


def decider(start: int = 2, settings: Settings = QUICK) -> ThreadDecider:
    return ThreadDecider([1, 2], start, steps_per_epoch=1000, settings=settings)


def run_steps(d: ThreadDecider, rates: dict[int, float], steps: int, noise: float = 0.0,
              rng: random.Random | None = None) -> list[int]:
    """Feed `steps` steps whose duration follows `rates` of the count running (times 1 +- `noise`); returns
    the count each step ran with."""
    rng = rng or random.Random(0)
    ran = []
    for _ in range(steps):
        ran.append(d.current)
        jitter = 1 + rng.uniform(-noise, noise)
        d.observe(BATCH, BATCH / rates[d.current] * jitter)
    return ran


def test_a_probe_picks_the_faster_count():
    idle, loaded = decider(), decider()
    idle.start_probe("start")
    loaded.start_probe("start")
    run_steps(idle, IDLE, 200)
    run_steps(loaded, LOADED, 200)
    assert (idle.chosen, idle.current, loaded.chosen, loaded.current) == (2, 2, 1, 1)
    [result] = loaded.finished
    assert result.reason == "start" and result.rates == pytest.approx(LOADED)


def test_steps_that_slow_down_trigger_a_probe_and_a_switch():
    d = decider()
    d.start_probe("start")
    run_steps(d, IDLE, 200)
    d.finished.clear()
    ran = run_steps(d, LOADED, 200)  # another process takes a core
    [result] = d.finished
    assert result.reason == "steps slowed 17.3x" and (result.before, result.chosen) == (2, 1)
    # within two check windows (the first may straddle the change); the slow count is not probed again
    assert ran.index(1) <= 2 * QUICK.window and ran[-100:] == [1] * 100


def test_steps_that_speed_up_trigger_a_probe_back():
    d = decider()
    d.start_probe("start")
    run_steps(d, LOADED, 200)
    d.finished.clear()
    run_steps(d, {1: 14_000.0 * 1.5, 2: 26_000.0 * 1.5}, 200)  # the other process ends: 1 thread gets faster
    [result] = d.finished
    assert result.reason.startswith("steps sped up") and (result.before, result.chosen) == (1, 2)


def test_noise_within_the_hysteresis_never_flips_the_count():
    d = decider(settings=Settings(skip_at_start=1))  # windows of 0.1 s, as in a run
    d.start_probe("start")
    near = {1: 20_000.0, 2: 21_000.0}  # 5 % apart, steps jittering by +-8 %
    rng = random.Random(1)
    run_steps(d, near, 200, noise=0.08, rng=rng)
    first = d.chosen
    for _ in range(30):  # 30 epochs: a probe at each start
        d.start_probe("epoch start")
        run_steps(d, near, 300, noise=0.08, rng=rng)
    assert {r.chosen for r in d.finished} == {first}
    assert all(r.reason in ("start", "epoch start") for r in d.finished)  # no drift probes from noise


def test_without_idle_cores_no_probe_tries_more_threads_after_the_start():
    """Beside a busy core, 2 threads run 1/20 as fast: once 1 was chosen, drift and epoch-start probes try 2
    again only when the last window left a core idle (a probe of 2 there cost two steps at 1/20)."""
    noisy = {1: 13_800.0 * 1.6, 2: 1_500.0}  # the busy core's noise: 1 thread 1.6x faster for a while
    for spare, tried in ((0.0, False), (0.4, False), (0.9, True), (None, True)):
        d = decider()
        d.start_probe("start")
        run_steps(d, LOADED, 200)
        d.spare_cores = spare
        ran = run_steps(d, noisy, 200)  # "steps sped up" probes
        d.start_probe("epoch start")
        ran += run_steps(d, LOADED, 200)
        assert (2 in ran) == tried, spare
        assert d.chosen == 1 and {r.reason.split()[0] for r in d.finished} >= {"start", "steps", "epoch"}


def test_fewer_threads_are_always_tried():
    d = decider()
    d.start_probe("start")
    run_steps(d, IDLE, 200)
    d.spare_cores = 0.0  # 2 threads keep both cores busy
    ran = run_steps(d, LOADED, 200)  # another process takes a core
    assert 1 in ran and d.chosen == 1


def test_the_idle_meter_reads_idle_and_iowait_cores(tmp_path, monkeypatch):
    stat, clock = tmp_path / "stat", [10.0]
    tick = os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])
    meter = threads.IdleMeter(str(stat))
    stat.write_text(f"cpu  500 0 100 {10 * tick} {2 * tick} 0 0 0 0 0\ncpu0 ...\n")
    assert meter.sample() is None  # nothing to compare with yet
    clock[0] += 2.0
    stat.write_text(f"cpu  900 0 100 {11 * tick} {2 * tick + tick // 2} 0 0 0 0 0\n")
    assert meter.sample() == pytest.approx((1 + 0.5) / 2.0)  # 1.5 s idle + iowait in 2 s: 0.75 cores
    assert threads.IdleMeter(str(tmp_path / "missing")).sample() is None


def test_the_policy_measures_idle_cores_at_epoch_start_and_every_window(fake, monkeypatch):
    samples = []
    monkeypatch.setattr(threads.IdleMeter, "sample", lambda self: samples.append(1) or 0.25)
    policy = ThreadPolicy(ThreadDecider([1, 2], 2, 1000, QUICK), lambda line: None)
    policy.begin_epoch(0)
    fake.run(policy, 5 * QUICK.window)
    assert len(samples) == 1 + 5 and policy.decider.spare_cores == 0.25


def test_every_epoch_start_probes_again():
    d = decider()
    d.start_probe("start")
    run_steps(d, IDLE, 200)
    d.start_probe("epoch start")
    assert d.probe is not None and d.current == 2  # the chosen count is measured first
    assert d.start_probe("epoch start") == 2 and d.probe.reason == "epoch start"  # a running probe goes on
    run_steps(d, {1: 14_000.0, 2: 7_000.0}, 200)  # slower by 1.2x at most between checks: no drift probe
    assert [(r.reason, r.chosen) for r in d.finished] == [("start", 2), ("epoch start", 1)]


def test_choose_keeps_the_current_count_unless_another_is_clearly_faster():
    assert choose({1: 100.0, 2: 105.0}, 1, margin=1.1) == 1
    assert choose({1: 100.0, 2: 115.0}, 1, margin=1.1) == 2
    assert choose({1: 105.0, 2: 100.0}, 2, margin=1.1) == 2
    # at the start no count is current: the fewest threads within the margin of the fastest
    assert choose({1: 100.0, 2: 105.0, 3: 108.0}, None, margin=1.1) == 1
    assert choose({1: 100.0, 2: 180.0}, None, margin=1.1) == 2


def test_a_probe_window_lasts_long_enough_and_no_longer():
    d = ThreadDecider([1, 2], 2, steps_per_epoch=10_000, settings=Settings(skip_at_start=0))
    d.start_probe("start")
    run_steps(d, {1: 64_000.0, 2: 64_000.0}, 99)  # 1 ms steps: 100 steps make the 0.1 s window
    assert d.probe is not None and d.current == 1  # the start probes 1 thread first
    run_steps(d, {1: 64_000.0, 2: 64_000.0}, 1)
    assert d.current == 2
    short = ThreadDecider([1, 2], 2, steps_per_epoch=32, settings=Settings(skip_at_start=0))
    short.start_probe("start")
    run_steps(short, {1: 64_000.0, 2: 64_000.0}, 8)  # a short epoch caps the window at min_steps
    assert short.current == 2


def test_candidates():
    assert candidates(1) == [1] and candidates(2) == [1, 2] and candidates(4) == [1, 2, 3, 4]
    assert candidates(16) == [1, 2, 4, 8, 15, 16]


# --- the policy: clock, torch.set_num_threads, log lines and metrics ------------------------------------------

class FakeTorch:
    """torch.set_num_threads recorded; a clock that advances by each step's duration at the count set."""

    def __init__(self, rates: dict[int, float]):
        self.rates, self.now, self.threads, self.calls = rates, 0.0, torch.get_num_threads(), []

    def set_num_threads(self, n: int) -> None:
        self.threads = n
        self.calls.append(n)

    def run(self, policy: ThreadPolicy, steps: int) -> None:
        for _ in range(steps):
            self.now += BATCH / self.rates[self.threads]
            policy.step(BATCH)


@pytest.fixture()
def fake(monkeypatch):
    clock = FakeTorch(dict(IDLE))
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock.now)
    monkeypatch.setattr(threads.torch, "set_num_threads", clock.set_num_threads)
    monkeypatch.setattr(threads.IdleMeter, "sample", lambda self: None)  # the machine's idle time: unknown
    return clock


def test_the_policy_logs_its_choice_and_its_changes(fake):
    lines = []
    policy = ThreadPolicy(ThreadDecider([1, 2], 2, 1000, QUICK), lines.append)
    policy.begin_epoch(0)
    fake.run(policy, 300)
    assert lines == ["threads: 2 (probe: 1 -> 14.0k images/s, 2 -> 26.0k)"]
    assert policy.end_epoch() == {"threads": 2, "thread_switches": 0}
    policy.begin_epoch(1)
    fake.run(policy, 100)
    fake.rates[2] = 2_000.0  # another process takes a core mid-epoch
    fake.run(policy, 100)
    assert re.fullmatch(r"threads: 2 -> 1 in epoch 2 at step \d+: steps slowed 13\.0x "
                        r"\(probe: 1 -> 14\.0k images/s, 2 -> 2\.0k\)", lines[-1]), lines[-1]
    assert policy.end_epoch() == {"threads": 2, "thread_switches": 1}
    assert fake.threads == 1


@pytest.mark.parametrize("options", [{"threads": 1}, {"deterministic": True}])
def test_pinned_and_deterministic_runs_never_probe(options, fake, monkeypatch, capsys):
    monkeypatch.setattr(threads.ThreadDecider, "start_probe", lambda *a: pytest.fail("probed"))
    policy = ThreadPolicy.for_run(make_config(**options), torch.device("cpu"), 100, print)
    fixed = fake.threads
    policy.begin_epoch(0)
    fake.run(policy, 200)
    policy.close()
    assert policy.decider is None and fake.calls == [] and capsys.readouterr().out == ""
    assert policy.end_epoch() == {"threads": fixed, "thread_switches": 0}


def test_a_gpu_run_leaves_threads_alone():
    assert ThreadPolicy.for_run(make_config(), torch.device("cuda"), 100, print).decider is None


# --- real short runs -------------------------------------------------------------------------------------------

@pytest.fixture()
def unusual_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # no run here chooses 3 on this machine's candidates unless it has >= 3 cores
    yield 3
    torch.set_num_threads(before)


def test_a_short_run_logs_its_thread_choice_and_records_it(tmp_path, capsys, unusual_threads):
    result = lenet.train(train_size=2000, epochs=2, log_every=0, out=tmp_path)
    out = capsys.readouterr().out
    first, *changes = [x for x in out.splitlines() if x.startswith("threads: ")]
    probe = r"\(probe: 1 -> [\d.]+k? images/s(, \d+ -> [\d.]+k?)*\)"
    assert re.fullmatch(rf"threads: \d+ {probe}", first), first
    for line in changes:  # a loaded machine may change the count (the tests run beside other processes)
        assert re.fullmatch(rf"threads: \d+ -> \d+ in epoch [12] at step \d+: [a-z ]+( [\d.]+x)? {probe}", line), line
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counts = candidates(len(os.sched_getaffinity(0)))
    assert [(r["threads"] in counts, r["thread_switches"] >= 0) for r in rows] == [(True, True)] * 2
    assert [r["threads"] for r in result.history] == [r["threads"] for r in rows]
    assert torch.get_num_threads() == unusual_threads  # the process's count is restored


def test_a_pinned_run_uses_its_count_and_restores_the_process_one(capsys, unusual_threads):
    result = fit(make_config(train_size=2000, epochs=2, log_every=0, threads=1), progress_bar=False)
    assert [(m["threads"], m["thread_switches"]) for m in result.history] == [(1, 0), (1, 0)]
    assert "threads: " not in capsys.readouterr().out
    assert torch.get_num_threads() == unusual_threads


def test_a_count_far_behind_is_cut_short():
    d = decider()
    d.start_probe("start")
    run_steps(d, LOADED, 200)
    d.start_probe("epoch start")
    ran = run_steps(d, LOADED, 100)
    assert ran.count(2) == 1 + 1  # one step not timed after the switch, then 1: 9x slower than 1 thread
    assert d.chosen == 1 and d.finished[-1].rates[2] == pytest.approx(LOADED[2])
    slow = {1: 13_800.0, 2: 5_000.0}  # 2.8x slower: cut after 3 timed steps (Settings.hopeless)
    d.start_probe("epoch start")
    assert run_steps(d, slow, 100).count(2) == 1 + 3
    collapsed = {1: 36_000.0, 2: 1_000.0}  # 36x: beyond 2 x Settings.collapsed, the untimed step is enough
    d.start_probe("epoch start")
    assert run_steps(d, collapsed, 100).count(2) == 1 and d.chosen == 1


def test_a_slower_count_is_cut_after_3_steps_once_a_count_was_chosen():
    d = decider()
    d.start_probe("start")
    first = run_steps(d, IDLE, 200)
    assert first[:40].count(1) >= 1 + QUICK.min_steps  # the first probe times 1 thread in full: nothing chosen yet
    d.start_probe("epoch start")
    ran = run_steps(d, IDLE, 100)
    assert ran.count(1) == 1 + 3  # 1 thread runs at 0.54x of 2: behind by more than Settings.behind (1.25)
    assert d.chosen == 2 and d.finished[-1].rates[1] == pytest.approx(IDLE[1])
    close = {1: 23_000.0, 2: 26_000.0}  # 1.13x apart: within `behind`, so the window runs its full length
    d.start_probe("epoch start")
    assert run_steps(d, close, 100).count(1) == 1 + QUICK.min_steps
