"""``embed --engine ray``: decode + encode on a Ray cluster with Ray Data, written into the same cache.

The driver (``embed``) lists the sources and drops the uuids the cache already holds before any byte is
read, exactly as the local engine does. The remaining refs become a Ray dataset of locations (uuid, origin,
file or archive, member); ``map_batches`` runs ``EncodeBatches`` on an actor pool: each actor holds one
encoder session (its threads = the actor's CPUs), reads the bytes itself (local paths, zip members, or URIs
through pyarrow's filesystems), decodes them with the product's own reader and encodes the batch. A bad
image becomes a row with its reason, never an exception, so no block is ever dropped. Results stream back
to the driver (``iter_batches``), whose ``CacheWriter`` is the cache's one writer: it holds the lock,
writes immutable parts and records in each part which node encoded its rows. A killed driver loses only the
rows not yet written; the next run skips what is cached. A killed actor is restarted by Ray and its batch
retried; the writer never adds a uuid twice.

Only this module imports ray, and only ``embed --engine ray`` imports this module (ray itself is imported when
the engine runs, so the module loads without the ray extra).
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embed.cache import vectors_of
from embed.encoders import EncoderSpec
from embed.variants import VARIANTS
from embed.engines import EmbedJob, EngineChoice
from embed.image_vectors import image_vectors
from embed.runtime import BATCH_SIZE, Encoder
from embed.sources import ImageRef, ref_at
from vinted_tagger.errors import MissingExtra, UserError
from vinted_tagger.settings import worker_environment

BLOCKS_PER_WORKER = 4  # at least this many input blocks per actor, so every actor gets work
CALL_BATCHES = 4  # encoder batches per input block (= per actor call): decoding overlaps encoding within it
ACTOR_START_S = 600  # a pool that cannot start in this time (too few CPUs for --workers) fails clearly
STANDARD_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


class ClusterError(UserError, RuntimeError):
    """The Ray cluster cannot be reached, or cannot start the actors asked for."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtra("the ray engine needs the ray extra: pip install 'vinted-tagger[ray]'") from None
    return ray


# A local cluster listens on loopback only. Not 127.0.0.1: Ray rewrites exactly 127.0.0.1, localhost and ::1
# to the host's network address (ray._private.services.resolve_ip_for_localhost), while any other address of
# 127.0.0.0/8 is kept as given and is loopback all the same.
LOCAL_NODE_IP = "127.0.0.2"


def start_local(ray, num_cpus: int | None = None, env: dict | None = None) -> None:
    """A Ray cluster on this machine only, its workers seeing ``env`` (default: ``worker_environment()``)."""
    env = worker_environment() if env is None else env
    ray.init(num_cpus=num_cpus, _node_ip_address=LOCAL_NODE_IP, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": env} if env else None)


def connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` (or start a local one); True when this call started the connection."""
    if ray.is_initialized():
        return False
    if address is None:
        start_local(ray)
        return True
    env = worker_environment()
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env} if env else None)
    except ConnectionError as error:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {error}") from None
    return True


def plan(ray, threads: int | None, workers: int | None) -> tuple[int, int]:
    """(CPUs per actor = encoder threads, number of actors) for the cluster's CPUs."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if threads is None:
        threads = max(1, cpus // workers) if workers else min(2, cpus)
    return threads, workers or max(1, cpus // threads)


def actor_node_label(ray) -> str:
    """host/node-id[/custom resources] of the node this actor runs on: which node made a part."""
    node_id = ray.get_runtime_context().get_node_id()
    resources = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
    custom = sorted(r for r in resources if r not in STANDARD_RESOURCES and ":" not in r)
    return "/".join([socket.gethostname(), node_id[:12], *(["+".join(custom)] if custom else [])])


class EncodeBatches:
    """A Ray Data actor: one encoder session; location rows -> (uuid, origin, error, embedding, node) rows."""

    def __init__(self, spec: dict, threads: int, variant: str | None = None, batch_size: int = BATCH_SIZE):
        import ray

        # The variant the driver chose and the cache records (auto here could pick another one), compiled for
        # the one batch shape the local engine uses too.
        chosen = VARIANTS.get(variant) if variant else None
        options = {"runtime": chosen.runtime, "precision": chosen.precision} if chosen else {}
        self.encoder = Encoder.load(spec, threads=threads, batches=(batch_size,), **options)
        self.batch_size, self.threads = batch_size, threads
        # One reader pool for the actor's life, not one per call: each reader thread opens a zip archive once
        # (parsing a large archive's central directory costs as much as encoding a few images).
        self.readers = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.node = actor_node_label(ray)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pydict()
        refs = [ref_at(*fields) for fields in zip(rows["uuid"], rows["origin"], rows["location"], rows["member"])]
        position = {id(ref): i for i, ref in enumerate(refs)}
        dim = self.encoder.spec.dim
        errors: list[str | None] = [None] * len(refs)
        vectors = np.zeros((len(refs), dim), np.float32)
        # The whole call's images are queued at once: the readers decode the next encoder batch while this
        # one is encoded, as in the local engine.
        for done, result in image_vectors(self.encoder, refs, self.threads, len(refs), self.batch_size, self.readers):
            if isinstance(result, str):
                errors[position[id(done[0])]] = result
            else:
                vectors[[position[id(ref)] for ref in done]] = result
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        return pa.table({
            "uuid": pa.array(rows["uuid"], pa.string()),
            "origin": pa.array(rows["origin"], pa.string()),
            "error": pa.array(errors, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            "node": pa.array([self.node] * len(refs), pa.string()),
        })


def run(job: EmbedJob, choice: EngineChoice) -> None:
    ray = import_ray()
    if choice.workers is not None and choice.workers < 1:
        raise ValueError("--workers must be at least 1")
    started = connect(ray, choice.address)
    try:
        if job.todo:
            threads, workers = plan(ray, job.threads, choice.workers)
            spec = job.encoder.spec
            try:
                for batch in encoded_batches(ray, spec, job.todo, job.batch_size, workers, threads, job.writer.variant):
                    consume(batch, spec.dim, job)
            except ray.exceptions.GetTimeoutError:
                raise ClusterError(f"the cluster could not start {workers} encoder actors of {threads} CPUs each "
                                   f"within {ACTOR_START_S} s; pass fewer --workers or --threads") from None
    finally:
        if started:
            ray.shutdown()


def encoded_batches(ray, spec: EncoderSpec, todo: list[ImageRef], batch_size: int, workers: int, threads: int,
                    variant: str | None = None):
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # embed's own bar counts images
    context.print_on_execution_start = False
    # Start every actor (each loads its encoder session) before any batch is handed out, so that work spreads
    # over the whole pool rather than going to whichever actor was ready first.
    context.wait_for_min_actors_s = ACTOR_START_S
    items = [{"uuid": r.uuid, "origin": r.origin, "location": r.location, "member": r.member} for r in todo]
    blocks = min(len(items), max(workers * BLOCKS_PER_WORKER, -(-len(items) // (CALL_BATCHES * batch_size))))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        EncodeBatches,
        fn_constructor_kwargs={"spec": spec.to_dict(), "threads": threads, "variant": variant,
                               "batch_size": batch_size},
        batch_size=None,  # one call per block: the blocks above are the unit of work handed to an actor
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,  # Ray Data's own default restarts a lost actor and retries its batch
    )
    return dataset.iter_batches(batch_size=None, batch_format="pyarrow")


def consume(batch: pa.Table, dim: int, job: EmbedJob) -> None:
    """Failures to the summary, embeddings to the writer, grouped by the node that made them."""
    failed = pc.is_valid(batch.column("error"))
    for uuid, origin, reason in zip(*(batch.filter(failed).column(c).to_pylist() for c in ("uuid", "origin", "error"))):
        job.failed(uuid, origin, reason)
    good = batch.filter(pc.invert(failed))
    for node in pc.unique(good.column("node")).to_pylist():
        rows = good.filter(pc.equal(good.column("node"), node))
        job.encoded(rows.column("uuid").to_pylist(), vectors_of(rows, dim), node)
