"""bench/report.py: the machine record every bench writes beside its figures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import report  # noqa: E402  (bench/ is not a package)

# Two processors of a Zen 4 guest, as /proc/cpuinfo lists them (abridged); only the first is read.
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu amx_int8
"""


def test_cpu_record_reads_the_first_processor_and_keeps_only_the_flags_that_choose_kernels(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert report.cpu_record(path) == {"cpu": {
        "vendor": "AuthenticAMD", "model_name": "AMD EPYC", "family": 25, "model": 17,
        "flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]}}


def test_cpu_record_is_empty_without_cpuinfo_and_machine_still_has_the_cores(tmp_path):
    assert report.cpu_record(tmp_path / "absent") == {}
    assert report.machine()["cores"] >= 1
