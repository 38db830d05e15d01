"""The CPU lenet runs on, and its fp32 peak: what `lenet bench` compares its achieved GFLOP/s against.

    peak GFLOP/s = cores x GHz x FMA units per core x (FMA datapath bits / 32) x 2   (an FMA is 2 FLOPs)

Each factor is detected as follows, and `Cpu.how` says, per factor, which way it went:

    model        /proc/cpuinfo "model name" (else platform.processor())
    vector bits  /proc/cpuinfo flags: avx512f -> 512, avx2 -> 256, else 128. The instruction width, not the
                 datapath's: Zen 4 runs AVX-512 on 256-bit halves
    FMA units    no flag says it: a table by vendor / family / model (`fma_datapath` below), e.g. Xeon
                 Gold/Platinum 2 x 512-bit, Xeon Bronze/Silver and client Intel with AVX-512 1 x 512, Intel
                 AVX2 2 x 256, AMD Zen 4 2 x 256 (AVX-512 on 256-bit datapaths: 32 fp32 FLOP/cycle), Zen 5
                 server/desktop 2 x 512. LENET_FMA_UNITS (or `lenet bench --fma-units`) overrides the count
    cores        the CPUs of this process's affinity mask (os.sched_getaffinity), counted once per physical
                 core (SMT siblings share the FMA units: /sys/devices/system/cpu/cpuN/topology/thread_siblings_list)
    clock        /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq (the highest clock one core reaches; all
                 cores under AVX-512 run lower, so the peak is an upper bound), else /proc/cpuinfo "cpu MHz" (in a
                 VM: the host's nominal clock; on bare metal: cpu0's current clock), else LENET_CPU_GHZ (or
                 `lenet bench --cpu-ghz`), which also overrides both. Unknown: the peak is None

Linux only for the automatic parts; elsewhere every factor falls back to "unknown" or an assumption, said so.
This module imports no torch.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CPUINFO = Path("/proc/cpuinfo")
SYS_CPU = Path("/sys/devices/system/cpu")
FMA_UNITS_ENV = "LENET_FMA_UNITS"
GHZ_ENV = "LENET_CPU_GHZ"
FP32_BITS = 32


@dataclass(frozen=True)
class Cpu:
    model: str
    vector_bits: int  # widest vector instructions: 512 (AVX-512), 256 (AVX2), 128
    fma_units: int  # FMA pipes per core
    fma_bits: int  # width of each FMA pipe's datapath
    cores: int  # physical cores this process may run on
    logical_cpus: int  # CPUs in the affinity mask (SMT siblings counted)
    ghz: float | None
    how: dict[str, str] = field(default_factory=dict)  # factor -> how it was detected

    @property
    def flops_per_cycle(self) -> int:
        """fp32 FLOPs per cycle per core: FMA units x lanes x 2."""
        return self.fma_units * (self.fma_bits // FP32_BITS) * 2

    @property
    def peak_gflops(self) -> float | None:
        """fp32 FMA peak of all `cores`, in GFLOP/s; None when the clock is unknown."""
        return None if self.ghz is None else self.cores * self.ghz * self.flops_per_cycle

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flops_per_cycle": self.flops_per_cycle, "peak_gflops_fp32": self.peak_gflops}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cpu:
        """The inverse of `to_dict` (its derived keys ignored)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One line: the CPU and its peak, with the arithmetic."""
        ghz = "? GHz" if self.ghz is None else f"{self.ghz:.2f} GHz"
        peak = "unknown (give --cpu-ghz)" if self.peak_gflops is None else f"{self.peak_gflops:,.0f} GFLOP/s"
        return (f"{self.model}: {self.cores} cores x {ghz} x {self.fma_units} FMA x {self.fma_bits}-bit "
                f"({self.flops_per_cycle} fp32 FLOP/cycle/core; AVX width {self.vector_bits}) = fp32 peak {peak}")


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The fields of the first processor block of /proc/cpuinfo ("model name", "flags", "cpu family", ...)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def read_cpuinfo(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """`parse_cpuinfo` of the file (empty where it cannot be read)."""
    try:
        return parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        return {}


def flags_of(info: dict[str, str]) -> set[str]:
    """The instruction-set flags of a parsed /proc/cpuinfo ("Features" on ARM)."""
    return set((info.get("flags") or info.get("Features") or "").split())


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The instruction-set flags of /proc/cpuinfo (empty where it cannot be read)."""
    return flags_of(read_cpuinfo(cpuinfo))


def bf16_matmul_unit(flags: set[str]) -> str:
    """How this CPU multiplies bf16 matrices: "amx" (AMX tiles), "avx512" (AVX512-BF16 dot products) or
    "emulated" (neither: oneDNN widens to fp32 in software; 21x slower than fp32 on an AMD EPYC Zen 3)."""
    if "amx_bf16" in flags:
        return "amx"
    return "avx512" if "avx512_bf16" in flags else "emulated"


def vector_bits(flags: set[str]) -> int:
    """The widest vector instructions the flags announce."""
    if "avx512f" in flags:
        return 512
    return 256 if "avx2" in flags else 128


def _int(text: str | None) -> int | None:
    try:
        return int(text, 0) if text is not None else None
    except ValueError:
        return None


def fma_datapath(info: dict[str, str], flags: set[str]) -> tuple[int, int, str]:
    """(FMA units per core, datapath bits, why) from vendor, family and model: no cpuinfo flag states it."""
    vendor, name = info.get("vendor_id", ""), info.get("model name", "")
    family, model, bits = _int(info.get("cpu family")), _int(info.get("model")), vector_bits(flags)
    if vendor in ("AuthenticAMD", "GenuineIntel") and "fma" not in flags:
        return 1, 128 if "avx" not in flags else 256, "no FMA instructions: one multiply and one add pipe = 1 FMA"
    if vendor == "AuthenticAMD":
        if family == 0x17:
            if model is not None and model < 0x30:
                return 2, 128, "AMD family 0x17 model < 0x30: Zen/Zen+, AVX2 on 2 x 128-bit FMA"
            return 2, 256, "AMD family 0x17: Zen 2, 2 x 256-bit FMA"
        if family == 0x19:
            if bits == 512:
                return 2, 256, "AMD family 0x19 with AVX-512: Zen 4, AVX-512 on 2 x 256-bit FMA (32 FLOP/cycle)"
            return 2, 256, "AMD family 0x19: Zen 3, 2 x 256-bit FMA"
        if family == 0x1A:
            if model is not None and (0x20 <= model <= 0x2F or 0x60 <= model <= 0x7F):
                return 2, 256, "AMD family 0x1A mobile model: Zen 5 with 256-bit FMA datapaths"
            return 2, 512, "AMD family 0x1A: Zen 5 (server/desktop), 2 x 512-bit FMA"
    if vendor == "GenuineIntel":
        if bits == 512:
            if "Xeon" not in name:
                return 1, 512, "Intel client core with AVX-512: ports 0+1 fused, 1 x 512-bit FMA"
            if any(tier in name for tier in ("Bronze", "Silver")) or any(f"Gold 5{g}" in name for g in "12"):
                return 1, 512, "Intel Xeon Bronze/Silver/Gold 51xx-52xx: 1 x 512-bit FMA"
            return 2, 512, "Intel Xeon with AVX-512 (Gold/Platinum and later): 2 x 512-bit FMA"
        return 2, 256, "Intel with AVX2 + FMA (Haswell or later): 2 x 256-bit FMA"
    return 2, bits, f"vendor {vendor or 'unknown'} not in lenet's table: assumed 2 FMA units of the vector width"


def physical_cores(cpus: set[int], sys_cpu: Path = SYS_CPU) -> tuple[int, str]:
    """(physical cores among `cpus`, how): SMT siblings share one core's FMA units."""
    groups = set()
    for cpu in cpus:
        try:
            groups.add((sys_cpu / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:
            return len(cpus), f"{len(cpus)} CPUs in os.sched_getaffinity (no topology in {sys_cpu}: SMT not checked)"
    smt = "" if len(groups) == len(cpus) else f", {len(cpus)} logical (SMT siblings share FMA units)"
    return len(groups), f"os.sched_getaffinity: {len(groups)} physical cores (topology/thread_siblings_list){smt}"


def _override(value: float | None, env: str, environ: dict[str, str] | os._Environ, flag: str,
              kind: str = "number") -> float | None:
    """The flag's value, else the environment variable's, else None; ConfigError unless a finite positive
    number (`kind` "integer": a positive integer; "2.5" is refused, not truncated)."""
    text = str(value) if value is not None else environ.get(env)
    if text is None:
        return None
    try:
        number = int(text) if kind == "integer" else float(text)
    except ValueError:
        number = 0
    # `not number > 0`, not `number <= 0`: NaN fails every comparison and must be refused like 0
    if not number > 0 or number == math.inf:
        where = f"{flag} {text}" if value is not None else f"{env}={text!r}"
        what = "a positive integer" if kind == "integer" else "a finite positive number"
        raise ConfigError(f"{where}: must be {what}; give {flag} or {env} {what}")
    return number


def clock_ghz(cpuinfo: dict[str, str], sys_cpu: Path = SYS_CPU) -> tuple[float | None, str]:
    """(GHz, how): the highest clock cpufreq reports, else /proc/cpuinfo's "cpu MHz", else unknown."""
    max_freq = sys_cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq"
    try:
        return int(max_freq.read_text()) / 1e6, f"{max_freq} (kHz; the single-core maximum: an upper bound)"
    except (OSError, ValueError):
        pass
    mhz = cpuinfo.get("cpu MHz")
    try:
        return float(mhz) / 1000, "/proc/cpuinfo 'cpu MHz' (no cpufreq: in a VM the host's nominal clock)"
    except (TypeError, ValueError):
        return None, "unknown: no cpufreq and no 'cpu MHz'; give --cpu-ghz or LENET_CPU_GHZ"


def detect_cpu(*, fma_units: int | None = None, ghz: float | None = None, cpuinfo: Path = CPUINFO,
               sys_cpu: Path = SYS_CPU, environ: dict[str, str] | os._Environ = os.environ,
               cpus: set[int] | None = None) -> Cpu:
    """This machine's CPU; `fma_units` / `ghz` (else LENET_FMA_UNITS / LENET_CPU_GHZ) override the detection."""
    info = read_cpuinfo(cpuinfo)
    flags = flags_of(info)
    how = {"model": "/proc/cpuinfo 'model name'" if "model name" in info else "platform.processor()"}
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    bits = vector_bits(flags)
    how["vector_bits"] = f"/proc/cpuinfo flags: {'avx512f' if bits == 512 else 'avx2' if bits == 256 else 'no avx2'}"
    units, datapath, why = fma_datapath(info, flags)
    how["fma"] = f"table: {why}"
    override = _override(fma_units, FMA_UNITS_ENV, environ, "--fma-units", "integer")
    if override is not None:
        units, how["fma"] = int(override), f"given ({int(override)} units of {datapath} bits); table said: {why}"
    allowed = cpus if cpus is not None else (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
                                             else set(range(os.cpu_count() or 1)))
    cores, how["cores"] = physical_cores(allowed, sys_cpu)
    clock, how["ghz"] = clock_ghz(info, sys_cpu)
    given = _override(ghz, GHZ_ENV, environ, "--cpu-ghz")
    if given is not None:
        clock, how["ghz"] = given, f"given; detection said: {how['ghz']}"
    return Cpu(model=model, vector_bits=bits, fma_units=units, fma_bits=datapath, cores=cores,
               logical_cpus=len(allowed), ghz=clock, how=how)
