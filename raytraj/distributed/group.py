"""The SPMD worker group: Ray actors, one per placement-group bundle, joined into one torch.distributed
process group; it is started, driven by one call per command, and restarted whole when a member is lost.

Why actors and ``torch.distributed`` rather than Ray Train's ``TorchTrainer``: a transfer is
driven step by step by the engine (which evaluates, checkpoints and records each step), and the
trainer runs one function to its end, reporting through its own storage and checkpoint layout.
What the trainer adds, the placement group, the process group and restart-on-failure, is a few
dozen lines here, kept in step with the run folder's own checkpoint (``state/shards``), with no
second copy of it.

Failures. The driver waits on rank 0's answer and on every other rank's ``follow`` at once, so a
member that dies ends the wait. Whether a member is lost is asked of the member itself, in a
concurrency group of its own: a rank busy computing answers, so busy is never taken for lost
(there is no deadline on a step). A lost member (its process, or its node) restarts the whole
group: every actor is killed, the placement group is made anew once Ray has marked a lost node
dead (so no bundle lands on it again), and the caller restores the ranks from the last step's
checkpoint. An error of the computation itself (not a loss) closes the group and is raised.
"""

from __future__ import annotations

import time
import uuid

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from ..config import ConfigError
from .cluster import fits, fixed_cluster, node_totals, short_resources
from .rank import Rank
from .recovery import is_worker_loss


class GroupLost(RuntimeError):
    """Members of the group were lost; the group must restart."""


@ray.remote(num_cpus=0)
def _alive() -> bool:
    return True


class WorkerGroup:
    def __init__(self, n: int, bundle: dict, actor_args: tuple, *, placement_timeout_s: float = 600,
                 collective_timeout_s: float = 1800, ping_timeout_s: float = 30):
        self.n, self.bundle, self.actor_args = n, bundle, actor_args
        self.placement_timeout_s = placement_timeout_s
        self.collective_timeout_s = collective_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self.ranks: list = []
        self.follows: list = []
        self.pg = None
        self.placement: list[dict] = []
        self.calls = 0  # remote calls the driver made (for the accounting)

    # -- start and stop ------------------------------------------------------------------------------
    def start(self) -> None:
        self.pg = placement_group([self.bundle] * self.n, strategy="SPREAD")
        self._wait_for_placement()
        options = {"num_cpus": self.bundle.get("CPU", 1), "num_gpus": self.bundle.get("GPU", 0)}
        run = uuid.uuid4().hex[:8]
        self.ranks = [Rank.options(**options, name=f"raytraj-{run}-rank-{i}", scheduling_strategy=(
            PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i))).remote(i, self.n,
                                                                                               *self.actor_args)
                      for i in range(self.n)]
        host, port = ray.get(self.ranks[0].rendezvous.remote())
        joined = [r.join.remote(host, port, self.collective_timeout_s) for r in self.ranks]
        ray.get(joined)  # surfaces a rank's start-up error (bad data, no GPU)
        self.follows = [r.follow.remote() for r in self.ranks[1:]]
        self.placement = ray.get([r.describe.remote() for r in self.ranks])
        self.calls += 2 + 3 * self.n

    def _wait_for_placement(self) -> None:
        deadline = time.monotonic() + self.placement_timeout_s
        while True:
            ready, _ = ray.wait([self.pg.ready()], timeout=min(2.0, max(0.01, deadline - time.monotonic())))
            if ready:
                return
            present = ray.cluster_resources()
            if fixed_cluster() and not fits(self.bundle, self.n):
                self._remove_pg()
                raise ConfigError(
                    f"the Ray cluster can never place {self.n} workers of {self.bundle}: it is a fixed local cluster "
                    f"with {node_totals()} (in all {short_resources(present)}); use fewer --workers or smaller "
                    "--cpus-per-worker/--gpus-per-worker")
            if time.monotonic() >= deadline:
                self._remove_pg()
                raise ConfigError(
                    f"the Ray cluster cannot place {self.n} workers of {self.bundle} within "
                    f"{self.placement_timeout_s:.0f}s (it has {short_resources(present)}); use fewer --workers, "
                    "smaller --cpus-per-worker/--gpus-per-worker, or a longer --placement-timeout while nodes start")

    def _remove_pg(self) -> None:
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.pg = None

    def close(self) -> None:
        for r in self.ranks:
            try:
                ray.kill(r)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass
        self.ranks, self.follows = [], []
        self._remove_pg()

    def restart(self) -> None:
        """Every member anew, once the nodes of lost members are known dead or alive."""
        nodes = {p["node"] for p in self.placement}
        self.close()
        self._await_node_verdicts(nodes)
        self.start()

    def _await_node_verdicts(self, nodes: set[str]) -> None:
        """Wait until each node is either marked dead by Ray or runs a task: a bundle placed on a node
        that died but is not marked yet would be lost again."""
        deadline = time.monotonic() + self.placement_timeout_s
        for node in nodes:
            while time.monotonic() < deadline:
                alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                if node not in alive:
                    break
                probe = _alive.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
                ready, _ = ray.wait([probe], timeout=5)
                if ready:
                    try:
                        ray.get(ready[0])
                        break
                    except Exception:  # noqa: BLE001 - the node is going: wait for its verdict
                        pass
                else:
                    ray.cancel(probe, force=True)

    # -- commands --------------------------------------------------------------------------------------
    def command(self, kind: str, args: dict):
        """Run a command on every rank (rank 0 passes it on); rank 0's result."""
        self.calls += 1
        ref = self.ranks[0].lead.remote((kind, args))
        pending = [ref, *self.follows]
        while True:
            done, _ = ray.wait(pending, num_returns=1)
            try:
                value = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - sorted below: loss or the computation's error
                self._fail(e)
            if done[0] == ref:
                return value
            pending.remove(done[0])  # a follower returned: only after "stop"

    def _fail(self, error: BaseException):
        lost = self.lost()
        if lost:
            raise GroupLost(f"lost rank(s) {lost}") from error
        # Every member lives: an error of the computation. The others wait in a collective for it.
        raise error

    def lost(self) -> list[int]:
        """Ranks that do not answer a ping (a busy rank answers: pings have a thread of their own)."""
        self.calls += self.n
        pings = [r.describe.remote() for r in self.ranks]
        out = []
        for i, p in enumerate(pings):
            try:
                ray.get(p, timeout=self.ping_timeout_s)
            except Exception as e:  # noqa: BLE001
                if not is_worker_loss(e):
                    raise
                out.append(i)
        return out

    def side(self, i: int, method: str, *args):
        """A side call (evaluate, materialize) on rank ``i``: runs beside the rank's step."""
        self.calls += 1
        return getattr(self.ranks[i % self.n], method).remote(*args)

    def stats(self) -> list[dict]:
        self.calls += self.n
        return ray.get([r.stats.remote() for r in self.ranks])

    def stop(self) -> None:
        """End the followers' loops (the process group goes with the actors on close)."""
        if self.ranks:
            try:
                ray.get(self.ranks[0].lead.remote(("stop", {})), timeout=self.ping_timeout_s)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
