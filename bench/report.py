"""What every bench writes the same way: the machine record beside its figures, and its results file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from embed.speed import CPU_FLAGS, cpu_record  # noqa: F401  (what the product keys its timings by)
from vinted_tagger.files import write_bytes


def machine() -> dict:
    """The machine a bench ran on, as each results file records it: cores, and on Linux which CPU it is.

    The family and model number tell CPU generations apart that print the same name in a VM ("AMD EPYC"):
    AMD family 25 is Zen 3 / Zen 4 (AVX-512 on 256-bit units), family 26 Zen 5 (full-width AVX-512)."""
    record = {"cores": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    return {**record, **cpu_record()}


def run_record(load_at_start: float) -> dict:
    """The end of a speed bench's results: the machine, its 1-minute load when the bench began, the versions."""
    from embed.runtime import versions

    return {"machine": machine(), "load_avg_1min_at_start": load_at_start, "versions": versions()}


def write_results(path: Path, result: dict) -> None:
    """``result`` as indented JSON in key order, written atomically (a killed bench leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
