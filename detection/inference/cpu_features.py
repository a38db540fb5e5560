"""Which 16-bit and 8-bit units this CPU has, and what that means for the runtimes.

Intel CPUs since Cooper Lake compute bfloat16 natively (AVX512-BF16, and since Sapphire Rapids
the AMX tile units); since Cascade Lake they compute int8 dot products natively (AVX512-VNNI,
AVX-VNNI, AMX-INT8). Without them a bf16 model runs emulated, several times *slower* than
float32, and an int8 one gains little. Read from /proc/cpuinfo (Linux); elsewhere nothing is
known and everything runs float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
WIDE_FLAGS = ("avx512f", "avx2")
REPORTED = (*BF16_FLAGS, *INT8_FLAGS, *WIDE_FLAGS)


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set flags that decide the fast paths, as /proc/cpuinfo spells them."""

    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """True when bfloat16 matrix work runs on the CPU's own units (AMX or AVX512-BF16)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def native_int8(self) -> bool:
        """True when int8 dot products run natively (AMX-INT8, AVX512-VNNI or AVX-VNNI)."""
        return any(flag in self.flags for flag in INT8_FLAGS)

    def kernels(self, precision: str) -> str:
        """The units a model in `precision` ('f32', 'bf16' or 'int8') runs on, in words."""
        if precision == "bf16":
            units = [f for f in BF16_FLAGS if f in self.flags]
            return "+".join(units) if units else "emulated (no bf16 units)"
        if precision == "int8":
            units = [f for f in INT8_FLAGS if f in self.flags]
            return "+".join(units) if units else "no int8 dot-product units"
        units = [f for f in WIDE_FLAGS if f in self.flags]
        return units[0] if units else "scalar/SSE"

    def describe(self) -> str:
        """One line for logs and start lines: the reported flags this CPU has."""
        present = [flag for flag in REPORTED if flag in self.flags]
        return "CPU flags: " + (", ".join(present) if present else "none of " + ", ".join(REPORTED))


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The flags of the first processor listed in /proc/cpuinfo's text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return CpuFeatures(frozenset(value.split()))
    return CpuFeatures(frozenset())


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU features (cached: the CPU does not change while a process runs)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuFeatures(frozenset())


def default_precision(verified: str | None, features: CpuFeatures | None = None) -> str:
    """The inference precision a model runs in unless the user names one.

    `verified` is the reduced precision the export checked with the accuracy guard (stored in
    the model), or None. It is used only where the CPU computes it natively: bf16 emulated is
    slower than float32, so such a CPU runs float32, which always keeps the decisions.
    """
    features = features or cpu_features()
    if verified == "bf16" and features.native_bf16:
        return "bf16"
    return "f32"
