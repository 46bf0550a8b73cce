"""Which replicas a call for a multiplexed model may go to: pure, over plain slots.

Design (Ray Serve's behaviour, `weir.multiplex`): a model is slow to load and each replica
holds only a few, so a call for model M goes to a replica holding M when one has room
(power of two choices among those, by the router). When every replica holding M is busy,
the call waits a moment (MODEL_MATCH_WAIT_S) for one of them rather than make a new
replica load M and evict something else; after that it goes to another replica. A model
no replica holds goes to the replicas holding the fewest models, which spreads models over
the pool instead of piling them onto one replica that would then evict them in turn.

What a replica holds comes from two sources: the route table (the replica's own report,
relayed by the leader) and this caller's memory of where it just sent calls for a model
(`sent_models`): the report follows a load by a tenth of a second or so, and calls for a
new model arriving in that window would otherwise each pick a replica afresh, and load the
model on several. Only replicas that multiplex (they say so in the table, models or not)
are remembered: a model id sent to a deployment that does not multiplex (an ingress
passing the header on to a multiplexed one, say) must not pin its calls to one replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

#: How long a call waits for a busy replica holding its model before another takes it.
MODEL_MATCH_WAIT_S = 0.2
#: How long a caller assumes a replica holds a model it sent a call for there (until the
#: route table says so itself; it normally does within a few hundred ms).
SENT_MODEL_TTL_S = 2.0


class ModelSlot(Protocol):
    """What the choice reads of a replica (the router's `ReplicaSlot`)."""

    in_flight: int
    skip_until: float
    #: Whether the replica multiplexes (has a `@serve.multiplexed` loader).
    multiplexed: bool
    #: The models the replica reported holding (loaded or loading).
    models: frozenset[str]
    #: Model id -> monotonic time until which this caller assumes the replica holds it.
    sent_models: dict[str, float]


Slot = TypeVar("Slot", bound=ModelSlot)


def holds(slot: ModelSlot, model_id: str, now: float) -> bool:
    """Whether the replica holds the model, as far as this caller knows."""
    return model_id in slot.models or slot.sent_models.get(model_id, 0.0) > now


def num_models(slot: ModelSlot, now: float) -> int:
    """How many models the replica holds, as far as this caller knows."""
    sent = [m for m, until in slot.sent_models.items() if until > now and m not in slot.models]
    return len(slot.models) + len(sent)


def model_candidates(slots: Sequence[Slot], model_id: str, max_ongoing: int, now: float,
                     *, matching: bool) -> list[Slot]:
    """The replicas a call for `model_id` may go to now (empty: wait).

    In order: replicas with room that hold the model; none, while `matching` (the call
    has waited less than MODEL_MATCH_WAIT_S) and some replica without room holds it; else
    the replicas with room that hold the fewest models.
    """
    free = [s for s in slots if s.in_flight < max_ongoing and s.skip_until <= now]
    holders = [s for s in free if holds(s, model_id, now)]
    if holders:
        return holders
    if not free or (matching and any(holds(s, model_id, now) for s in slots)):
        return []
    counts = [num_models(s, now) for s in free]
    fewest = min(counts)
    return [s for s, n in zip(free, counts, strict=True) if n == fewest]


def remember_sent(slot: ModelSlot, model_id: str, now: float) -> None:
    """A call for `model_id` goes to the replica: if it multiplexes, assume it holds the
    model for a while."""
    if slot.multiplexed and model_id not in slot.models:
        slot.sent_models[model_id] = now + SENT_MODEL_TTL_S


def refresh_sent(slot: ModelSlot, now: float) -> None:
    """The route table spoke for the replica: forget assumptions it confirms or that
    expired."""
    if slot.sent_models:
        slot.sent_models = {m: until for m, until in slot.sent_models.items()
                            if until > now and m not in slot.models}
