"""What every bench writes the same way: the machine record beside its figures, and its results file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from vinted_tagger.files import write_bytes


# The CPU flags the encoder's runtimes choose their kernels by (bf16, int8 dot products, AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def machine() -> dict:
    """The machine a bench ran on, as each results file records it: cores, and on Linux which CPU it is.

    The family and model number tell CPU generations apart that print the same name in a VM ("AMD EPYC"):
    AMD family 25 is Zen 3 / Zen 4 (AVX-512 on 256-bit units), family 26 Zen 5 (full-width AVX-512)."""
    record = {"cores": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    return {**record, **cpu_record()}


def cpu_record(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """Vendor, model name, family, model and the CPU_FLAGS present, from the first processor of cpuinfo
    (nothing where there is no such file)."""
    try:
        first = cpuinfo.read_text().split("\n\n")[0]
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu": {"vendor": fields.get("vendor_id"), "model_name": fields.get("model name"),
                    "family": _int(fields.get("cpu family")), "model": _int(fields.get("model")),
                    "flags": [flag for flag in CPU_FLAGS if flag in flags]}}


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def run_record(load_at_start: float) -> dict:
    """The end of a speed bench's results: the machine, its 1-minute load when the bench began, the versions."""
    from embed.runtime import versions

    return {"machine": machine(), "load_avg_1min_at_start": load_at_start, "versions": versions()}


def write_results(path: Path, result: dict) -> None:
    """``result`` as indented JSON in key order, written atomically (a killed bench leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
