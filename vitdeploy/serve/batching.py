"""How many images a server, an extractor or Triton puts in one runtime call (serving policy, not the format)."""

from __future__ import annotations

from vitdeploy.description import BatchRange
from vitdeploy.errors import VitdeployError

SERVING_BATCH = 8  # images per runtime call of a server or extractor unless told


def single_image_error(batch: BatchRange, why: str) -> str | None:
    """Why calls that may hold a single image (`why` says whose: a partial batch, the end of a shard, Triton's
    dynamic batcher) cannot run on this batch range; None if it starts at 1."""
    if batch.min == 1:
        return None
    return (f"the artifact takes batches of {batch.min}..{batch.max}, but {why}: expected a batch range from 1 (the "
            "recipe's input.batch)")


def serving_batch(batch: BatchRange, asked: int | None, option: str) -> int:
    """Images per runtime call for a server or extractor: `asked` (by `option`), else 8 or the max if smaller."""
    chosen = asked or min(SERVING_BATCH, batch.max)
    problem = (single_image_error(batch, "a server's or extractor's calls may hold a single image")
               or batch.batch_error(chosen))
    if problem:
        raise VitdeployError(f"{option}: {problem}")
    return chosen
