"""How fast each encoder variant runs on THIS machine: measured once, kept in the user's cache folder.

``auto`` takes the fastest interchangeable variant, and which one that is depends on the CPU (bf16 units,
int8 dot products, core count), so it is measured here rather than written down: a short timing of each
runnable candidate on first use, kept in ``$VINTED_TAGGER_HOME/variant-speed.json`` under a key made of the
encoder's identity, the CPU's identity, the runtime libraries' versions and the batch size. Another CPU or
another library version is another key, hence a new measurement; ``embed --list-variants --remeasure``
measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock

from vinted_tagger.files import write_json
from vinted_tagger.settings import encoder_home

SPEED_FILE = "variant-speed.json"
# The CPU flags the encoder's runtimes choose their kernels by (bf16, int8 dot products, AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


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


def cpu_identity() -> dict:
    """What a speed measurement is a function of on the machine's side: the CPU and how many cores."""
    return {"cores": os.cpu_count(), "machine": platform.machine(), **cpu_record()}


# How variants are timed: a new number when that changes, so that figures kept from the old way are measured
# again. 2: OpenVINO no longer pads a batch smaller than its chunk (batch 2 timed at 40% of its speed, so auto
# chose ONNX Runtime for a service with VINTED_TAGGER_MAX_BATCH 1 or 2).
TIMING = 2


def speed_key(encoder: tuple[str, str], versions: dict, batch: int) -> dict:
    """The key a measurement is kept under: encoder identity, CPU identity, runtime versions, batch size and
    the timing method."""
    runtimes = {name: versions.get(name) for name in ("onnxruntime", "openvino")}
    return {"encoder": list(encoder), "cpu": cpu_identity(), "versions": runtimes, "batch": batch, "timing": TIMING}


def measured_speeds(key: dict, names: Iterable[str], measure: Callable[[list[str]], dict[str, float]],
                    remeasure: bool = False) -> dict[str, float]:
    """Images per second of each variant in ``names`` under ``key``: the kept figures, or when one is missing
    (or with ``remeasure``) ``measure(names)``'s, which are then kept."""
    names = list(names)
    path = encoder_home() / SPEED_FILE
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # two processes starting at once measure once, not on each other
        table = _read(path)
        speeds = {} if remeasure else dict(table.get(digest, {}).get("speeds", {}))
        missing = [name for name in names if name not in speeds]
        if missing:  # all of them again, side by side: figures of one run rank fairly, mixed runs may not
            speeds.update({name: round(float(value), 1) for name, value in measure(names).items()})
            table[digest] = {"key": key, "speeds": speeds}
            write_json(path, table)
    return {name: speeds[name] for name in names}


def _read(path: Path) -> dict:
    """The kept measurements; a missing or unreadable file is an empty table (it is only a cache)."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}
