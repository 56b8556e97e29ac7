"""The encoder's runtime variants (runtime x precision) and which of them may stand in for one another.

One exported ONNX graph feeds every runtime. ``graph`` says which file: "fp32" is the export itself, "int8"
its statically quantised copy (``embed --calibrate``) stored beside it. ``cpu`` is the OpenVINO CPU
capability the precision needs (None: any CPU).

Two variants are interchangeable (heads trained on one's embeddings may read the other's, a cache of one may
take rows of the other) when the runtime bench measured, in both directions, that the same heads decide the
same from both embeddings (the lowest agreement of category1 and each tag over the stand-in test images) at
least as often as they do between clean pixels and pixels with invisible +-1-level noise: a change of
precision then moves fewer decisions than noise no eye sees. Those measurements are data,
``variant_agreement.json`` beside this file, written by ``python bench/runtime_bench.py`` (``make
bench-runtime``) together with ``bench/results/runtime.json``; a pair the bench did not measure is refused.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    runtime: str  # "onnxruntime" or "openvino"
    precision: str  # what the arithmetic runs in: "fp32", "bf16" or "int8"
    graph: str  # which ONNX file: "fp32" (the export) or "int8" (its calibrated copy)
    package: str  # the Python package the runtime needs
    cpu: str | None  # OpenVINO OPTIMIZATION_CAPABILITIES entry needed; None = any CPU
    min_cosine: float  # to ONNX Runtime fp32 on real pixels (tests hold every variant to it)

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.precision}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("onnxruntime", "fp32", "fp32", "onnxruntime", None, 0.9999),
        Variant("onnxruntime", "int8", "int8", "onnxruntime", None, 0.99),
        Variant("openvino", "fp32", "fp32", "openvino", None, 0.9999),
        Variant("openvino", "bf16", "fp32", "openvino", "BF16", 0.998),
        Variant("openvino", "int8", "int8", "openvino", None, 0.99),
    )
}
REFERENCE_VARIANT = "onnxruntime-fp32"  # the portable reference; what a manifest without a record ran
RUNTIMES = tuple(dict.fromkeys(v.runtime for v in VARIANTS.values()))
PRECISIONS = tuple(dict.fromkeys(v.precision for v in VARIANTS.values()))
AGREEMENT_FILE = Path(__file__).with_name("variant_agreement.json")


class PrecisionMismatch(ValueError):
    """Embeddings of one runtime/precision met a cache or model whose decisions they are not known to keep."""


def get_variant(runtime: str, precision: str) -> Variant:
    """Look a runtime x precision up; unknown names raise ValueError listing the valid ones."""
    name = f"{runtime}-{precision}"
    if name not in VARIANTS:
        raise ValueError(f"unknown runtime/precision {runtime!r}/{precision!r}; valid: {', '.join(VARIANTS)} "
                         "(or auto)")
    return VARIANTS[name]


def variant_of(record: dict | None) -> str:
    """The variant a cache or model manifest's runtime record names (none recorded: the reference)."""
    return (record or {}).get("variant", REFERENCE_VARIANT)


def agreement_data(record: dict) -> dict:
    """The measured record (``noise_floor`` and ``pairs`` "<heads>|<embeddings>" -> {"agreement": ...}) with
    ``interchangeable``: variant -> the variants it may stand in for (both directions at or above the floor)."""
    floor = record["noise_floor"]["agreement"]
    pairs = record["pairs"]
    ok: dict[str, set[str]] = {}
    for pair in pairs:
        a, b = pair.split("|")
        back = pairs.get(f"{b}|{a}")
        if back is not None and min(pairs[pair]["agreement"], back["agreement"]) >= floor:
            ok.setdefault(a, set()).add(b)
    return {**record, "interchangeable": ok}


@functools.cache
def measured() -> dict:
    """The agreements the runtime bench measured (``variant_agreement.json``), with ``interchangeable``."""
    return agreement_data(json.loads(AGREEMENT_FILE.read_text()))


def pair_agreement(a: str, b: str) -> float | None:
    """The lower of the two directions' measured agreement of ``a`` and ``b`` (None: not measured)."""
    pairs = measured()["pairs"]
    there, back = pairs.get(f"{a}|{b}"), pairs.get(f"{b}|{a}")
    return None if there is None or back is None else min(there["agreement"], back["agreement"])


def same_decisions(a: str, b: str) -> bool:
    """Whether heads trained on embeddings of variant ``a`` may read embeddings of variant ``b``."""
    return a == b or b in measured()["interchangeable"].get(a, ())


def check_same_decisions(expected: dict | None, found: dict | None, what: str) -> None:
    """Refuse to mix embeddings of variants not measured to keep each other's decisions."""
    a, b = variant_of(expected), variant_of(found)
    if same_decisions(a, b):
        return
    if b not in VARIANTS or a not in VARIANTS:
        unknown = b if b not in VARIANTS else a
        raise PrecisionMismatch(f"{what} holds embeddings of an unknown runtime/precision {unknown!r} (valid: "
                                f"{', '.join(VARIANTS)}); re-embed into a new cache")
    agreement, floor = pair_agreement(a, b), measured()["noise_floor"]["agreement"]
    measure = ("their agreement was never measured" if agreement is None else
               f"their measured decision agreement {agreement:.4f} is below the noise floor {floor:.4f}")
    raise PrecisionMismatch(
        f"{what} holds embeddings of {b}, not {a}, and these two are not measured to give the same decisions "
        f"({measure}; bench/runtime_bench.py); use --runtime {VARIANTS[b].runtime} --precision "
        f"{VARIANTS[b].precision} if this machine can, or re-embed into a new cache")
