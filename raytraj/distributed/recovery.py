"""Worker loss: how to tell it from an error of the computation, and the one retry loop around it."""

from __future__ import annotations

from typing import Callable, TypeVar

from ray.exceptions import ActorUnavailableError, GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

T = TypeVar("T")
LOST = (RayActorError, ActorUnavailableError, ObjectLostError, GetTimeoutError)


def is_worker_loss(e: BaseException) -> bool:
    """A failure from losing a worker or its objects (not an error of the computation itself)."""
    if isinstance(e, RayTaskError):
        return isinstance(getattr(e, "cause", None), LOST)
    return isinstance(e, LOST)


def retry_on_worker_loss(attempt: Callable[[], T], recover: Callable[[], object], max_recoveries: int,
                         before_retry: Callable[[BaseException], None] | None = None) -> T:
    """``attempt()``; after a worker loss, ``recover()`` (rebuild the lost workers), then
    ``before_retry(error)`` (e.g. resubmit, restore shards), and try again, up to ``max_recoveries`` times.

    Args:
        attempt: the work; every result of it must be a pure function of its inputs, so a retry
            gives the same answer.
        recover: rebuilds lost workers.
        max_recoveries: retries allowed; the error of the last attempt is raised.
        before_retry: what must happen between recovery and the next attempt.

    Returns:
        what ``attempt`` returned.
    """
    for n in range(max_recoveries + 1):
        try:
            return attempt()
        except Exception as e:  # noqa: BLE001 - only worker loss is retried
            if not is_worker_loss(e) or n == max_recoveries:
                raise
            recover()
            if before_retry is not None:
                before_retry(e)
    raise AssertionError("unreachable")
