"""``embed --engine local`` (the default): decode and encode in this process, with the driver's encoder."""

from __future__ import annotations

from embed.engines import EmbedJob, EngineChoice
from embed.image_vectors import image_vectors

READER_THREADS = 2
AHEAD_BATCHES = 4  # images decoded in advance, in encoder batches


def run(job: EmbedJob, choice: EngineChoice) -> None:
    ahead = AHEAD_BATCHES * job.batch_size
    for refs, result in image_vectors(job.encoder, job.todo, READER_THREADS, ahead, job.batch_size):
        if isinstance(result, str):
            job.failed(refs[0].uuid, refs[0].origin, result)
        else:
            job.encoded([ref.uuid for ref in refs], result)
