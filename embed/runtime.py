"""Run an encoder's ONNX graph on ONNX Runtime or OpenVINO: no torch at prediction or serving time.

Each encoder is exported once to ``$VINTED_TAGGER_HOME/encoders/<slug>/model.onnx`` (default home:
``~/.cache/vinted-tagger``) next to ``spec.json``, which records the spec (weights checksum included) and
the ONNX file's own checksum. The default encoder's graph and its calibrated int8 copy also ship in the
package (``artifacts/encoders/<slug>/``, read only), so a plain install predicts without torch.
``Encoder.load`` finds the graph (``graph_dir``: the user's folder first, then the packaged copy), verifies
it, and exports it first when neither has it and torch is installed. Its int8 copy (``model.int8.onnx`` +
``int8.json``, made by ``embed --calibrate`` into the user's folder) is looked up there, then beside the fp32
graph it was quantised from (``int8_dir``). Which runtime x precision runs is ``embed.variants.VARIANTS`` data;
``choose_variant`` runs the one asked for, or for ``auto`` the fastest interchangeable one this machine can run,
measured here (``embed.speed``), and says so in one line when what was asked for must fall back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from embed.encoders import EncoderError, EncoderSpec, get_encoder, identity
from embed.images import ImageError, check_decoder, load_pixels, resize_shorter_crop, to_rgb
from embed.speed import measured_speeds, speed_key
from embed.variants import (
    REFERENCE_VARIANT, VARIANTS, Variant, check_same_decisions, get_variant, pair_agreement, same_decisions,
    variant_of,
)
from vinted_tagger.errors import MissingExtra
from vinted_tagger.files import atomic_path, file_sha256, write_json
from vinted_tagger.settings import PACKAGE_DATA, encoder_home

log = logging.getLogger("embed.runtime")
INT8_FILE, INT8_RECORD = "model.int8.onnx", "int8.json"
GRAPH_FILES, INT8_FILES = ("model.onnx", "spec.json"), (INT8_FILE, INT8_RECORD)
BATCH_SIZE = 16  # images per encoder call in `embed` (a static shape the runtimes compile for)


def encoder_dir(spec: EncoderSpec) -> Path:
    """The user's folder of the encoder, where exports and calibrations are written."""
    return encoder_home() / "encoders" / spec.slug


def packaged_dir(spec: EncoderSpec) -> Path:
    """The encoder's graph files shipped in the package (the default encoder's): read only."""
    return PACKAGE_DATA / "artifacts" / "encoders" / spec.slug


def graph_dir(spec: EncoderSpec) -> Path:
    """Where the encoder's exported graph is: the user's folder when it holds one, else the packaged copy
    when there is one, else the user's folder (where an export will put it)."""
    return _holding(GRAPH_FILES, encoder_dir(spec), packaged_dir(spec)) or encoder_dir(spec)


def int8_dir(spec: EncoderSpec, fp32_folder: Path | None = None) -> Path | None:
    """Where the encoder's int8 copy is: the user's folder (calibrations land there), else beside the fp32
    graph it was quantised from (``fp32_folder``, default ``graph_dir``); None when never calibrated."""
    return _holding(INT8_FILES, encoder_dir(spec), fp32_folder or graph_dir(spec))


def _holding(names: tuple[str, ...], *folders: Path) -> Path | None:
    return next((folder for folder in folders if all((folder / name).exists() for name in names)), None)


def versions() -> dict:
    """Versions of the libraries that shape an embedding, for manifests."""
    names = ["vinted-tagger", "onnxruntime", "openvino", "simplejpeg", "numpy", "pillow", "torch", "timm",
             "open_clip_torch"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def ensure_onnx(spec: EncoderSpec, export: bool = True) -> tuple[Path, EncoderSpec]:
    """Path of the encoder's ONNX file and the spec with its checksum. A missing file is exported now, or
    with ``export=False`` (prediction and serving, which never import the PyTorch side) is an error."""
    folder = graph_dir(spec)
    model, spec_file = (folder / name for name in GRAPH_FILES)
    if not (model.exists() and spec_file.exists()):
        if not export:
            raise FileNotFoundError(
                f"the ONNX file of encoder {spec.name!r} is not built here ({model} is missing); build it once "
                f"with `embed --export-only --encoder {spec.name}` (needs the [export] extra)")
        export_graph(spec, folder)
    recorded = json.loads(spec_file.read_text())
    if file_sha256(model) != recorded["onnx_sha256"]:
        raise EncoderError(f"{model} does not match its recorded checksum; {_redo(spec, folder, 'export')}")
    return model, EncoderSpec.from_dict(recorded["spec"])


def export_graph(spec: EncoderSpec, folder: Path) -> None:
    """Export the encoder's graph into ``folder``: model.onnx and spec.json (the spec, the file's checksum)."""
    try:
        from embed.export import build_embedder, export_onnx
    except ImportError as error:
        raise MissingExtra(
            f"the ONNX file for encoder {spec.name!r} is not built and PyTorch is not installed ({error}); "
            "run `make setup` or `pip install 'vinted-tagger[export]'` then `embed --export-only`"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    module, spec = build_embedder(spec)
    with atomic_path(folder / "model.onnx") as temp:
        export_onnx(module, spec, temp)
        record = {"spec": spec.to_dict(), "onnx_sha256": file_sha256(temp), "versions": versions()}
    write_json(folder / "spec.json", record)


def int8_graph(spec: EncoderSpec, fp32_path: Path) -> tuple[Path, dict] | None:
    """The encoder's calibrated int8 copy and its record, verified; None when it was never calibrated."""
    folder = int8_dir(spec, Path(fp32_path).parent)
    if folder is None:
        return None
    path, record_file = (folder / name for name in INT8_FILES)
    record = json.loads(record_file.read_text())
    if record.get("fp32_sha256") != file_sha256(fp32_path):
        raise EncoderError(f"{path} was quantised from another export; run `embed --calibrate` again")
    if file_sha256(path) != record.get("onnx_sha256"):
        raise EncoderError(f"{path} does not match its recorded checksum; {_redo(spec, folder, 'calibrate')}")
    return path, record


def _redo(spec: EncoderSpec, folder: Path, step: str) -> str:
    """What fixes a graph file that fails its checksum: the packaged copy is reinstalled, never rewritten."""
    if folder == packaged_dir(spec):
        return "the installed package is damaged: reinstall vinted-tagger"
    return f"delete {folder} and export again" if step == "export" else "run `embed --calibrate` again"


# --- the two runtimes -----------------------------------------------------------------------------------


def openvino_core():
    """An OpenVINO Core, or None when openvino is not installed (one per process: it is heavy)."""
    global _CORE
    if _CORE is None:
        try:
            import openvino
        except ImportError:
            return None
        _CORE = openvino.Core()
    return _CORE


_CORE = None


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin can run here (BF16, INT8, FP32, ...)."""
    return list(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cannot_run(variant: Variant, spec: EncoderSpec) -> str | None:
    """Why this machine cannot run ``variant`` (None: it can)."""
    if variant.runtime == "openvino":
        core = openvino_core()
        if core is None:
            return "openvino is not installed (a base dependency: pip install vinted-tagger again)"
        if variant.cpu and variant.cpu not in cpu_capabilities():
            return f"this CPU has no {variant.cpu}"
    if variant.graph == "int8" and int8_dir(spec) is None:
        return f"{NOT_CALIBRATED} (run `embed --calibrate SOURCE --ids TRAIN.parquet`)"
    return None


def choose_variant(spec: EncoderSpec, runtime: str = "auto", precision: str = "auto",
                   agree_with: dict | None = None, batch: int = 16, remeasure: bool = False) -> Variant:
    """The variant to run: the one asked for; for ``auto`` the fastest one this machine can run (timed here
    once, ``embed.speed``) among those interchangeable with ``agree_with`` (the runtime record of the cache or
    model the embeddings will meet; none: with the reference variant). When what was asked for cannot run
    here, what runs instead is said in one line on the log."""
    candidates = interchangeable_candidates(runtime, precision, agree_with)
    reasons = {v.name: cannot_run(v, spec) for v in candidates}
    runnable = [v for v in candidates if reasons[v.name] is None]
    # A plain auto skips what this machine lacks without a word; a half-named choice says what it skipped,
    # except an int8 copy never calibrated (optional) under precision auto.
    quiet = runtime == precision == "auto"
    skipped = [(v, reasons[v.name]) for v in candidates if reasons[v.name] is not None
               and not (precision == "auto" and reasons[v.name].startswith(NOT_CALIBRATED))]
    if runnable:
        chosen = ranked(spec, runnable, batch, remeasure)[0] if len(runnable) > 1 else runnable[0]
        if not quiet:
            _say_fallback(skipped, chosen)
        return chosen
    for name in sorted(FALLBACKS, key=lambda n: VARIANTS[n].runtime != candidates[0].runtime):
        variant = VARIANTS[name]
        if (agree_with is None or _agrees(agree_with, variant)) and cannot_run(variant, spec) is None:
            _say_fallback(skipped or [(candidates[0], reasons[candidates[0].name])], variant)
            return variant
    raise EncoderError(f"no encoder runtime can run here: {reasons}")


def interchangeable_candidates(runtime: str, precision: str, agree_with: dict | None) -> list[Variant]:
    """The variants ``runtime``/``precision`` name whose embeddings ``agree_with``'s heads may read (for a
    plain ``auto``, none to agree with: those interchangeable with the reference). Raises PrecisionMismatch
    when there is none."""
    candidates = [v for v in VARIANTS.values() if _matches(v, runtime, precision)]
    if not candidates:
        get_variant(runtime, precision)  # raises, listing the valid names
    if agree_with is None and runtime == precision == "auto":
        agree_with = {"variant": REFERENCE_VARIANT}
    if agree_with is not None:
        keeping = [v for v in candidates if _agrees(agree_with, v)]
        if not keeping:
            check_same_decisions({"variant": candidates[0].name}, agree_with, "the model or cache")  # raises
        candidates = keeping
    return candidates


def ranked(spec: EncoderSpec, variants: list[Variant], batch: int = 16, remeasure: bool = False) -> list[Variant]:
    """``variants`` fastest first, by their speed measured on this machine (``variant_speeds``)."""
    speeds = variant_speeds(spec, variants, batch, remeasure)
    return sorted(variants, key=lambda v: -speeds[v.name])


def variant_speeds(spec: EncoderSpec, variants: list[Variant], batch: int = 16,
                   remeasure: bool = False) -> dict[str, float]:
    """Images per second of each variant here at ``batch`` images a call: kept ones, else timed now."""
    path, _ = ensure_onnx(spec, export=False)
    key = speed_key(identity(spec), versions(), batch)
    measure = lambda names: time_variants(spec, path, [VARIANTS[n] for n in names], batch)  # noqa: E731
    speeds = measured_speeds(key, [v.name for v in variants], measure, remeasure)
    log.info("encoder: images/s here at batch %d: %s", batch, ", ".join(f"{n} {s}" for n, s in speeds.items()))
    return speeds


TIMING_SECONDS = 1.0  # per variant, after a warm-up call: enough to rank them, short enough for a first use


def time_variants(spec: EncoderSpec, onnx_path: Path, variants: list[Variant], batch: int) -> dict[str, float]:
    """Images per second of each variant on seeded random pixels, ``batch`` at a time: one call of each in
    turn, round after round, for about TIMING_SECONDS each (interleaved, so that a burst of load elsewhere
    slows them all alike, not the one that happened to run then)."""
    encoders = {v.name: Encoder(spec, onnx_path, variant=v.name, batches=(batch,)) for v in variants}
    size = spec.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for encoder in encoders.values():
        encoder.encode(pixels)  # first-call allocations are not timed
    seconds, rounds = dict.fromkeys(encoders, 0.0), 0
    while rounds < 2 or sum(seconds.values()) < TIMING_SECONDS * len(encoders):
        for name, encoder in encoders.items():
            began = time.perf_counter()
            encoder.encode(pixels)
            seconds[name] += time.perf_counter() - began
        rounds += 1
    return {name: rounds * batch / spent for name, spent in seconds.items()}


def variant_report(spec: EncoderSpec, agree_with: dict | None, batch: int = 16,
                   remeasure: bool = False) -> tuple[list[dict], Variant]:
    """Each variant's line for ``embed --list-variants``: why it cannot run here (None: it can), its speed
    here (measured now if not kept, again with ``remeasure``), its measured agreement with ``agree_with``'s
    variant and whether the two are interchangeable; and the variant ``auto`` takes."""
    base = variant_of(agree_with)
    reasons = {name: cannot_run(variant, spec) for name, variant in VARIANTS.items()}
    runnable = [VARIANTS[name] for name, reason in reasons.items() if reason is None]
    speeds = variant_speeds(spec, runnable, batch, remeasure)
    rows = [{"variant": name, "cannot_run": reasons[name], "images_per_s": speeds.get(name),
             "agreement": 1.0 if name == base else pair_agreement(base, name),
             "interchangeable": same_decisions(base, name)} for name in VARIANTS]
    return rows, choose_variant(spec, agree_with=agree_with, batch=batch)


FALLBACKS = ("openvino-fp32", REFERENCE_VARIANT)  # what runs when the variant asked for cannot


def _say_fallback(skipped: list[tuple[Variant, str]], chosen: Variant) -> None:
    if skipped:
        log.warning("encoder: %s is not available here (%s); running %s", skipped[0][0].name, skipped[0][1],
                    chosen.name)


NOT_CALIBRATED = "no calibrated int8 file"


def _matches(variant: Variant, runtime: str, precision: str) -> bool:
    return runtime in ("auto", variant.runtime) and precision in ("auto", variant.precision)


def _agrees(record: dict, variant: Variant) -> bool:
    return same_decisions(variant_of(record), variant.name)


def session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the QDQ graph's unused-initialiser notes are noise, errors still show
    # Spinning threads would burn the cores that decode the next batch.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtRunner:
    """ONNX Runtime: any batch size (dynamic shapes cost it nothing measurable)."""

    def __init__(self, path: Path, variant: Variant, threads: int | None, batches: tuple[int, ...]):
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.ran = variant.precision

    lanes = 1  # one session: its own intra-op threads

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixels": pixels})[0]


class OpenVinoRunner:
    """OpenVINO on static shapes (they measured faster than a dynamic one), compiled once.

    One image (a lone service request) runs on a LATENCY request compiled at batch 1 that uses every thread.
    Two or more run on the throughput path: several streams, the threads split between them, each taking
    chunks of up to ``STREAM_BATCH`` images at once (on a small CPU one request leaves cores idle between
    layers, several small ones keep them busy; bench/runtime_bench.py measures it). A batch is cut into
    chunks spread evenly over the streams; a chunk runs on the smallest compiled size that holds it (padded
    with zeros up to it). The chunk sizes compiled follow ``batches``: a caller that asks for every size up to
    ``STREAM_BATCH`` and beyond (the service's micro-batches) gets every chunk size, so a batch of 3 runs as
    2 + 1 on two streams, never padded; ``embed`` (batches 1 and 16) gets only full chunks, and its batches
    too small to fill every stream (a last one) run one by one on the latency request.
    """

    HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the ops left unquantised stay fp32
    # Whole chunks (embed): STREAMS streams of STREAM_BATCH images, chosen by interleaved probes on the 2-core
    # machine (2 streams of 4 beat 2 of 2, 2 of 8 and one request of 16). Every chunk size (the service): the
    # CPU plugin's own choice of streams for this machine and model under the THROUGHPUT hint.
    STREAMS, STREAM_BATCH = 2, 4

    def __init__(self, path: Path, variant: Variant, threads: int | None, batches: tuple[int, ...]):
        core, threads = openvino_core(), threads or os.cpu_count() or 1
        model = core.read_model(str(path))
        self._input = model.input(0).get_any_name()
        self._dims = [d.get_length() for d in list(model.input(0).get_partial_shape())[1:]]
        self._dim = model.output(0).get_partial_shape()[1].get_length()
        precision = {"INFERENCE_PRECISION_HINT": self.HINTS[variant.precision], "INFERENCE_NUM_THREADS": threads}
        self.single = None  # batch 1: one request, every thread on it
        if 1 in batches:
            compiled = self._compile(core, model, 1, {**precision, "PERFORMANCE_HINT": "LATENCY"})
            self.single = compiled.create_infer_request()
        # Chunks follow the batches asked for, with or without batch 1: a timing at batch 2 (embed.speed) runs
        # two chunks of one, not one chunk of STREAM_BATCH padded with zeros, which measured half the speed.
        chunks = self._chunk_sizes(batches)
        # Several compiled chunk sizes share the cores: unpinned threads, so that two requests running at once
        # never sit on the same core because each compiled model pinned its first stream there.
        config = {**precision, "PERFORMANCE_HINT": "THROUGHPUT"}
        if len(chunks) > 1:
            config["ENABLE_CPU_PINNING"] = False
        else:
            config["NUM_STREAMS"] = min(self.STREAMS, threads)
        self.requests = {}  # chunk size -> one request per stream
        self.lane_requests = {}  # chunk size -> one request per lane (every chunk size compiled: the service)
        streams = 1
        for size in sorted(chunks, reverse=True):  # the whole chunk first: its stream count holds for all
            compiled = self._compile(core, model, size, config)
            streams = int(compiled.get_property("NUM_STREAMS"))
            config["NUM_STREAMS"] = streams
            self.requests[size] = [compiled.create_infer_request() for _ in range(streams)]
            if len(chunks) > 1:
                self.lane_requests[size] = [compiled.create_infer_request() for _ in range(streams)]
        self.requests = dict(sorted(self.requests.items()))
        self.streams = self.requests.get(max(chunks), []) if chunks else []  # the largest chunk's, one per stream
        # What the CPU plugin really computes in (a CPU without BF16 runs a bf16 hint in f32).
        reported = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.ran = "int8" if variant.precision == "int8" else {"f32": "fp32", "f16": "fp16"}.get(reported, reported)
        self.width = streams  # requests that run at once on the throughput path
        self.full = self.STREAM_BATCH * streams if self.requests else 0  # the smallest batch that fills every stream
        # The batch sizes that run without padding, each compiled shape once (Encoder.warm runs each).
        self.sizes = ([1] if self.single else []) + [size * streams for size in self.requests]
        self.lanes = streams if self.lane_requests else 1

    def on_lane(self, lane: int, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` on lane ``lane`` alone: one stream's threads, chunk after chunk, on requests of the lane's
        own (never the ones ``__call__`` uses), so that each lane takes a new batch the moment it is free
        instead of every stream waiting for the slowest of one batch."""
        largest = max(self.lane_requests)
        out = np.empty((len(pixels), self._dim), np.float32)
        for start in range(0, len(pixels), largest):
            chunk = pixels[start : start + largest]
            rows, size = len(chunk), min(s for s in self.lane_requests if s >= len(chunk))
            request = self.lane_requests[size][lane]
            request.infer({0: padded(chunk, size)}, share_inputs=True)
            out[start : start + rows] = request.get_output_tensor(0).data[:rows]
        return out

    def _chunk_sizes(self, batches: tuple[int, ...]) -> tuple[int, ...]:
        """The throughput chunk sizes to compile for these batch sizes (none when only batch 1 is asked)."""
        largest = max(batches)
        if largest <= 1:
            return ()
        if all(size in (1, *range(self.STREAM_BATCH, largest + 1, self.STREAM_BATCH)) for size in batches):
            return (self.STREAM_BATCH,)  # whole chunks only (embed's batches)
        return tuple(range(1, min(largest, self.STREAM_BATCH) + 1))

    def _compile(self, core, model, size: int, config: dict):
        model.reshape({self._input: [size, *self._dims]})
        return core.compile_model(model, "CPU", config)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        # One image, no throughput path, or (whole chunks only) fewer rows than fill every stream: the latency
        # request, all threads on each row, rather than padded chunks. (Encoder.encode never passes an empty batch.)
        n = len(pixels)
        if self.single is not None and (n == 1 or not self.requests or len(self.requests) == 1 and n < self.full):
            return np.concatenate([self._one(row[None]) for row in pixels])
        return self._streamed(pixels)

    def _one(self, pixels: np.ndarray) -> np.ndarray:
        out = self.single.infer({0: pixels}, share_inputs=True, share_outputs=False)
        return np.array(out[0], dtype=np.float32)

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """(rows, compiled size) per chunk: ``n`` rows cut into chunks of at most STREAM_BATCH rows, as even as
        can be, each run on the smallest compiled size that holds it. With every chunk size compiled, the count
        is a multiple of the streams' (every stream takes a share); with whole chunks only, as few as hold n."""
        count = -(-n // self.STREAM_BATCH)
        if len(self.requests) > 1:
            count = min(n, -(-count // self.width) * self.width)
        rows = [n // count + (k < n % count) for k in range(count)]
        return [(r, min(size for size in self.requests if size >= r)) for r in rows]

    def _streamed(self, pixels: np.ndarray) -> np.ndarray:
        """Chunk k runs on request k mod streams; a request's output is copied out before it takes its next
        chunk, so the rows come back in order whatever finishes first."""
        out = np.empty((len(pixels), self._dim), np.float32)
        # stream slot -> (request, first row, rows, the chunk it reads: held until the request is done)
        running: dict[int, tuple] = {}
        try:
            start = 0
            for k, (rows, size) in enumerate(self.chunks(len(pixels))):
                slot = k % self.width
                if slot in running:
                    self._collect(*running.pop(slot), out)
                chunk = padded(pixels[start : start + rows], size)
                request = self.requests[size][slot]
                request.start_async({0: chunk}, share_inputs=True)
                running[slot] = (request, start, rows, chunk)
                start += rows
            while running:
                self._collect(*running.popitem()[1], out)
        finally:
            for request, *_ in running.values():  # after an error: no request may still read ``pixels``
                request.wait()
        return out

    @staticmethod
    def _collect(request, start: int, rows: int, chunk: np.ndarray, out: np.ndarray) -> None:
        request.wait()
        out[start : start + rows] = request.get_output_tensor(0).data[:rows]


def padded(chunk: np.ndarray, size: int) -> np.ndarray:
    """``chunk`` with rows of zeros added up to ``size``, the compiled batch size it runs on."""
    if len(chunk) == size:
        return chunk
    return np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])


RUNNERS = {"onnxruntime": OrtRunner, "openvino": OpenVinoRunner}


class Encoder:
    """One runtime session of the encoder's graph: uint8 pixels (N, S, S, 3) -> embeddings (N, dim).

    ``record`` is what a cache or model manifest keeps of it: the variant that actually runs, the precision
    the runtime reports, the graph's checksum (and for int8 the calibration sample), and the JPEG decoder.
    """

    def __init__(self, spec: EncoderSpec, onnx_path: Path, threads: int | None = None,
                 variant: str = REFERENCE_VARIANT, batches: tuple[int, ...] = (1, BATCH_SIZE),
                 decoder: str | None = None):
        self.spec = spec
        self.variant = VARIANTS[variant]
        self.decoder = check_decoder(decoder)
        self.onnx_path = Path(onnx_path)
        graph, calibration = self.onnx_path, None
        if self.variant.graph == "int8":
            found = int8_graph(spec, self.onnx_path)
            if found is None:
                raise ValueError(f"{variant} needs a calibrated int8 file; run `embed --calibrate` first")
            graph, calibration = found[0], found[1]["calibration"]
        self.graph_path = graph
        self.runner = RUNNERS[self.variant.runtime](graph, self.variant, threads, batches)
        self.record = {
            "variant": self.variant.name,
            "runtime": self.variant.runtime,
            "precision": self.variant.precision,
            "ran_precision": self.runner.ran,
            "graph_sha256": file_sha256(graph),
            "decoder": self.decoder,
            **({"calibration": calibration} if calibration else {}),
        }
        self._lock = threading.Lock()  # an OpenVINO infer request serves one call at a time
        self._lane_locks = [threading.Lock() for _ in range(self.lanes)]

    @classmethod
    def load(cls, spec: EncoderSpec | dict | str, threads: int | None = None, runtime: str = "auto",
             precision: str = "auto", batches: tuple[int, ...] = (1, BATCH_SIZE), agree_with: dict | None = None,
             decoder: str | None = None, export: bool = True) -> Encoder:
        """The encoder of ``spec`` (a spec, its recorded dict, or a name from the table); ``export=False``
        never builds a missing ONNX file, so never imports torch."""
        if isinstance(spec, str):
            spec = get_encoder(spec)
        elif isinstance(spec, dict):
            spec = EncoderSpec.from_dict(spec)
        path, resolved = ensure_onnx(spec, export)
        # An open_clip hub tag has no checksum until downloaded: the export's record has it.
        wanted = spec if spec.sha256 else dataclasses.replace(spec, sha256=resolved.sha256)
        if identity(resolved) != identity(wanted):
            raise EncoderError(f"{path} was exported from other weights or another layout than {spec.name} asks for")
        resolved = dataclasses.replace(resolved, name=spec.name)
        variant = choose_variant(resolved, runtime, precision, agree_with, batch=max(batches))
        return cls(resolved, path, threads, variant.name, batches, decoder)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        with self._lock:
            return self.runner(np.ascontiguousarray(pixels, dtype=np.uint8))

    @property
    def lanes(self) -> int:
        """Batches that can run at once, each on a stream of its own (``encode_on``); 1: encode one at a time."""
        return self.runner.lanes

    def encode_on(self, lane: int, pixels: np.ndarray) -> np.ndarray:
        """``encode`` on one lane (0 <= lane < ``lanes``): lanes run at once, each on its share of the threads."""
        if len(pixels) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        if self.lanes == 1:  # no requests of the lanes' own: the shared ones, under encode's lock
            return self.encode(pixels)
        with self._lane_locks[lane]:
            return self.runner.on_lane(lane, np.ascontiguousarray(pixels, dtype=np.uint8))

    def warm(self) -> None:
        """Run every compiled batch size once, so that no request pays for first-call allocations."""
        size = self.spec.input_size
        for n in getattr(self.runner, "sizes", (1,)):
            self.encode(np.zeros((n, size, size, 3), np.uint8))
        for lane in range(self.lanes):
            for n in getattr(self.runner, "lane_requests", ()):
                self.encode_on(lane, np.zeros((n, size, size, 3), np.uint8))

    def pixels(self, image: bytes | Image.Image) -> np.ndarray:
        """One image (encoded bytes or PIL image) -> encoder input; raises ImageError."""
        if isinstance(image, Image.Image):
            return resize_shorter_crop(to_rgb(image), self.spec.input_size)
        return load_pixels(image, self.spec.input_size, decoder=self.decoder)

    def embed_images(self, images: Sequence[bytes | Image.Image]) -> tuple[np.ndarray, list[str | None]]:
        """Embeddings for a batch of images; a failed image gets a NaN row and its reason."""
        batch, errors = [], []
        for image in images:
            try:
                batch.append(self.pixels(image))
                errors.append(None)
            except ImageError as error:
                errors.append(str(error))
        vectors = np.full((len(images), self.spec.dim), np.nan, np.float32)
        ok = [i for i, error in enumerate(errors) if error is None]
        if ok:
            vectors[ok] = self.encode(np.stack(batch))
        return vectors, errors
