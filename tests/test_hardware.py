"""hardware.py: the CPU's model, vector width, FMA units, cores and clock from /proc/cpuinfo and /sys (faked
here per CPU kind), the overrides, and the fp32 peak that `lenet bench` compares against."""

import pytest
from fresh_python import assert_runs_without_importing

from lenet.cli import main
from lenet.errors import ConfigError
from lenet.hardware import detect_cpu, parse_cpuinfo

AVX2 = "fpu sse sse2 avx fma avx2"
AVX512 = AVX2 + " avx512f avx512bw avx512_bf16"


def cpuinfo(vendor: str, family: int, model: int, name: str, flags: str, mhz: str | None = "2596.102",
            cpus: int = 2) -> str:
    block = [f"vendor_id\t: {vendor}", f"cpu family\t: {family}", f"model\t\t: {model}", f"model name\t: {name}"]
    block += [f"cpu MHz\t\t: {mhz}"] if mhz else []
    block += [f"flags\t\t: {flags}"]
    return "\n\n".join("\n".join([f"processor\t: {i}", *block]) for i in range(cpus)) + "\n"


def machine(tmp_path, text: str, siblings: list[str] | None = None, max_khz: str | None = None):
    """A fake /proc/cpuinfo and /sys/devices/system/cpu under tmp_path; returns detect_cpu's path arguments."""
    (tmp_path / "cpuinfo").write_text(text)
    sys_cpu = tmp_path / "cpu"
    for cpu, group in enumerate(siblings or []):
        (sys_cpu / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (sys_cpu / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(group + "\n")
    if max_khz is not None:
        (sys_cpu / "cpu0" / "cpufreq").mkdir(parents=True)
        (sys_cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq").write_text(max_khz + "\n")
    return {"cpuinfo": tmp_path / "cpuinfo", "sys_cpu": sys_cpu, "environ": {}}


# (vendor, family, model, model name, flags) -> (vector bits, FMA units, FMA bits, fp32 FLOP/cycle/core)
KINDS = [
    (("AuthenticAMD", 25, 17, "AMD EPYC 9654 96-Core Processor", AVX512), (512, 2, 256, 32)),  # Zen 4
    (("AuthenticAMD", 26, 2, "AMD EPYC", AVX512), (512, 2, 512, 64)),  # Zen 5 (Turin): this project's VM
    (("AuthenticAMD", 26, 36, "AMD Ryzen AI 9 HX 370", AVX512), (512, 2, 256, 32)),  # Zen 5 mobile
    (("AuthenticAMD", 25, 33, "AMD Ryzen 9 5950X", AVX2), (256, 2, 256, 32)),  # Zen 3
    (("AuthenticAMD", 23, 1, "AMD EPYC 7601", AVX2), (256, 2, 128, 16)),  # Zen 1
    (("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8480+", AVX512), (512, 2, 512, 64)),  # Sapphire Rapids
    (("GenuineIntel", 6, 85, "Intel(R) Xeon(R) Silver 4210 CPU", AVX512), (512, 1, 512, 32)),
    (("GenuineIntel", 6, 85, "Intel(R) Xeon(R) Gold 5120 CPU", AVX512), (512, 1, 512, 32)),
    (("GenuineIntel", 6, 140, "11th Gen Intel(R) Core(TM) i7-1165G7", AVX512), (512, 1, 512, 32)),
    (("GenuineIntel", 6, 158, "Intel(R) Core(TM) i7-8700", AVX2), (256, 2, 256, 32)),
    (("GenuineIntel", 6, 42, "Intel(R) Core(TM) i7-2600", "sse sse2 avx"), (128, 1, 256, 16)),  # no FMA
]


@pytest.mark.parametrize(("kind", "expected"), KINDS, ids=[k[3] for k, _ in KINDS])
def test_vector_width_and_fma_units_per_cpu_kind(tmp_path, kind, expected):
    cpu = detect_cpu(**machine(tmp_path, cpuinfo(*kind)), cpus={0, 1})
    assert (cpu.vector_bits, cpu.fma_units, cpu.fma_bits, cpu.flops_per_cycle) == expected
    assert cpu.model == kind[3]
    assert cpu.how["fma"].startswith("table: ")


def test_zen4_peak_is_the_issues_arithmetic(tmp_path):
    """2 Zen 4 cores x 32 fp32 FLOP/cycle x 3.5 GHz = 224 GFLOP/s; the clock from cpufreq's maximum (kHz)."""
    paths = machine(tmp_path, cpuinfo("AuthenticAMD", 25, 17, "AMD EPYC 9654", AVX512), ["0", "1"], "3500000")
    cpu = detect_cpu(**paths, cpus={0, 1})
    assert (cpu.cores, cpu.ghz, cpu.peak_gflops) == (2, 3.5, 224.0)
    assert "cpuinfo_max_freq" in cpu.how["ghz"]
    assert "AVX-512 on 2 x 256-bit" in cpu.how["fma"]
    assert "224 GFLOP/s" in cpu.describe()


def test_clock_falls_back_to_cpu_mhz_then_unknown(tmp_path):
    cpu = detect_cpu(**machine(tmp_path, cpuinfo("AuthenticAMD", 26, 2, "AMD EPYC", AVX512)), cpus={0})
    assert cpu.ghz == pytest.approx(2.596102) and "cpu MHz" in cpu.how["ghz"]
    assert cpu.peak_gflops == pytest.approx(1 * 2.596102 * 64)
    unknown = detect_cpu(**machine(tmp_path, cpuinfo("AuthenticAMD", 26, 2, "AMD EPYC", AVX512, mhz=None)),
                         cpus={0})
    assert unknown.ghz is None and unknown.peak_gflops is None
    assert "--cpu-ghz" in unknown.how["ghz"] and "unknown" in unknown.describe()


def test_smt_siblings_count_as_one_core(tmp_path):
    paths = machine(tmp_path, cpuinfo("GenuineIntel", 6, 85, "Intel(R) Xeon(R) Gold 6248", AVX512, cpus=4),
                    ["0,2", "1,3", "0,2", "1,3"])
    cpu = detect_cpu(**paths, cpus={0, 1, 2, 3})
    assert (cpu.cores, cpu.logical_cpus) == (2, 4)
    assert "SMT" in cpu.how["cores"]
    assert detect_cpu(**paths, cpus={0, 2}).cores == 1  # an affinity mask of two siblings: one core's FMA units


def test_flags_and_environment_override_fma_units_and_clock(tmp_path):
    paths = machine(tmp_path, cpuinfo("AuthenticAMD", 26, 2, "AMD EPYC", AVX512))
    cpu = detect_cpu(**paths, cpus={0, 1}, fma_units=1, ghz=4.0)
    assert (cpu.fma_units, cpu.ghz, cpu.peak_gflops) == (1, 4.0, 2 * 4.0 * 32)
    assert cpu.how["fma"].startswith("given (1 units of 512 bits); table said: AMD family 0x1A")
    assert cpu.how["ghz"].startswith("given; detection said: /proc/cpuinfo")
    paths["environ"] = {"LENET_FMA_UNITS": "4", "LENET_CPU_GHZ": "3"}
    assert (detect_cpu(**paths, cpus={0}).fma_units, detect_cpu(**paths, cpus={0}).ghz) == (4, 3.0)
    assert detect_cpu(**paths, cpus={0}, fma_units=2).fma_units == 2  # the flag beats the environment
    paths["environ"] = {"LENET_FMA_UNITS": "two"}
    with pytest.raises(ConfigError, match=r"LENET_FMA_UNITS='two': must be a positive integer"):
        detect_cpu(**paths, cpus={0})


@pytest.mark.parametrize(("environ", "flags", "message"), [
    ({"LENET_CPU_GHZ": "nan"}, {}, "LENET_CPU_GHZ='nan': must be a finite positive number"),
    ({"LENET_CPU_GHZ": "inf"}, {}, "LENET_CPU_GHZ='inf': must be a finite positive number"),
    ({"LENET_FMA_UNITS": "inf"}, {}, "LENET_FMA_UNITS='inf': must be a positive integer"),  # was OverflowError
    ({"LENET_FMA_UNITS": "2.5"}, {}, "LENET_FMA_UNITS='2.5': must be a positive integer"),  # was 2 units
    ({}, {"ghz": float("nan")}, "--cpu-ghz nan: must be a finite positive number"),
    ({}, {"ghz": float("inf")}, "--cpu-ghz inf: must be a finite positive number"),
])
def test_non_finite_overrides_are_refused_like_zero(tmp_path, environ, flags, message):
    paths = {**machine(tmp_path, cpuinfo("AuthenticAMD", 26, 2, "AMD EPYC", AVX512)), "environ": environ}
    with pytest.raises(ConfigError) as error:
        detect_cpu(**paths, cpus={0}, **flags)
    assert str(error.value).startswith(message + "; give ")


def test_unknown_vendor_and_missing_cpuinfo_are_said_so(tmp_path):
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"
    cpu = detect_cpu(**machine(tmp_path, arm), cpus={0})
    assert (cpu.vector_bits, cpu.fma_units, cpu.fma_bits) == (128, 2, 128)
    assert "not in lenet's table: assumed" in cpu.how["fma"]
    assert cpu.how["model"] == "platform.processor()"
    missing = detect_cpu(cpuinfo=tmp_path / "absent", sys_cpu=tmp_path / "absent", environ={}, cpus={0, 1})
    assert missing.cores == 2 and "SMT not checked" in missing.how["cores"]


def test_parse_cpuinfo_reads_the_first_processor_block():
    info = parse_cpuinfo(cpuinfo("AuthenticAMD", 26, 2, "AMD EPYC", AVX512))
    assert (info["processor"], info["model name"], info["cpu family"]) == ("0", "AMD EPYC", "26")


def test_this_machine_is_detected_with_every_factor_explained():
    cpu = detect_cpu(environ={})
    assert cpu.cores >= 1 and cpu.vector_bits in (128, 256, 512) and cpu.fma_units >= 1
    assert set(cpu.how) == {"model", "vector_bits", "fma", "cores", "ghz"}
    assert cpu.to_dict()["peak_gflops_fp32"] == cpu.peak_gflops


def test_hardware_imports_no_torch():
    assert_runs_without_importing("import lenet.hardware")


@pytest.mark.parametrize(("argv", "message"), [
    (["--fma-units", "0"], "lenet bench: error: --fma-units must be a positive integer, got 0\n"),
    (["--cpu-ghz", "-1"], "lenet bench: error: --cpu-ghz must be a finite positive number, got -1.0\n"),
])
def test_bench_rejects_bad_overrides_in_one_line(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    assert capsys.readouterr().err == message


def test_bench_rejects_a_bad_environment_override_before_measuring(capsys, monkeypatch):
    monkeypatch.setenv("LENET_CPU_GHZ", "fast")
    assert main(["bench", "--repeats", "1"]) == 2
    assert capsys.readouterr().err == ("lenet bench: error: LENET_CPU_GHZ='fast': must be a finite positive number; "
                                       "give --cpu-ghz or LENET_CPU_GHZ a finite positive number\n")
