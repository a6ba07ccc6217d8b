"""Transfer settings, with paper-faithful defaults except where noted."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, check_seed
from ..trajectory import SCHEDULES

METHODS = ("fgmt", "gmt", "naive", "oracle")
BANK_DTYPES = ("bfloat16", "float16", "float32")
LAP_SOLVERS = ("auto", "scipy", "sparse", "auction")  # what perm.lap.lap_solver takes
# T of the commands that run many short transfers (the Tune commands' members and trials, the
# quickstart); a single transfer defaults to the paper's TransferConfig.steps.
QUICK_STEPS = 20


@dataclass(frozen=True)
class TransferConfig:
    """A transfer's settings, checked when built; the comments below say why each default is what it is.

    Args:
        method: ``fgmt``, ``gmt``, ``naive`` or ``oracle``.
        steps: T, the transfer steps (None with ``schedule="actual"``: the recorded steps).
        schedule: ``cosine`` or ``uniform`` (a linear trajectory), or ``actual`` (the recorded one).
        grad_batches: mini-batches averaged per gradient.
        batch_size: gradient mini-batch size.
        seed: seeds the batches, the BatchNorm batches and the solver's group order.
        warm_start: start each solve from the previous step's permutation.
        normalize: divide each pair's term for a tensor by the norms of its two sides.
        max_sweeps: sweeps allowed in a solve.
        tol, rtol: the solve's stopping rule (see ``raytraj.perm.SolveOptions``).
        step_sweeps: sweeps allowed in every step but the last (0: no cap).
        lap: the LAP solver: ``auto``, ``scipy``, ``sparse`` or ``auction`` (see ``raytraj.perm.lap``).
        eval_every: evaluate on val every k steps (0: only the last; ``AUTO_EVAL``: ``eval_steps``'s schedule).
        val_subset: evaluate on this many val samples (0: all of val).
        bn_batches: training batches to recalibrate BatchNorm statistics with.
        bank_dtype: how the pair bank stores the gradient pairs (``bfloat16``, ``float16``, ``float32``).
        eval_batch_size: the evaluation's batch size.
    """

    method: str = "fgmt"
    steps: int | None = 30  # T; None follows the recorded steps (schedule "actual")
    schedule: str = "cosine"  # cosine | uniform | actual
    grad_batches: int = 1  # mini-batches averaged per gradient (the paper's B = batch_size x this)
    batch_size: int = 128
    seed: int = 0  # batch order, BatchNorm batches and the solver's group order all derive from it
    # Warm-start each solve from the previous step's permutation. The official code cold-starts
    # from identity; warm starts are cheaper and keep permutations from jumping between steps.
    warm_start: bool = True
    normalize: bool = False
    max_sweeps: int = 100
    # Stop after a sweep whose gain in the objective is at most tol (absolute) ... The official code
    # stops after a sweep in which no single group's LAP gained more than 1e-7; tol bounds the
    # sweep's total gain instead.
    tol: float = 1e-7
    # ... or at most rtol x the permuted part of the objective, whichever is larger (0: tol alone).
    # The first sweep of a step holds nearly all of its gain; see benchmarks/results/convergence.md.
    rtol: float = 1e-3
    # Sweeps allowed in each step but the last (0: no cap). With warm starts a step's unfinished
    # descent goes on in the next step, whose bank holds the same pairs and one more; the last
    # step always runs to the rule above. 3 cuts the LAPs from 1.61x to 1.40x the floor of one
    # per group per step, mostly in the cold first steps (benchmarks/results/convergence.md).
    step_sweeps: int = 3
    # auto: the torch auction when the cost matrices live on a GPU, else exact scipy whatever is
    # installed (a seed's permutations never depend on the extras); sparse: see perm/lap.py and
    # benchmarks/results/cost.md
    lap: str = "auto"
    # Evaluate every k steps on val (0: only the last step). AUTO_EVAL (the default) evaluates about
    # ten steps spread over the run and every step of its last sixth, where the best step usually is
    # (see eval_steps; measured in benchmarks/results/cost.md). Per-step evaluation with BatchNorm
    # recalibration took 45-71% of a CNN transfer.
    eval_every: int = -1
    val_subset: int = 0  # evaluate on this many val samples, drawn once from the seed (0: all of val)
    bn_batches: int = 10  # training batches to recalibrate BatchNorm stats at each evaluated step
    # How FGMT/GMT's pair bank stores the gradient pairs: bfloat16 halves the bank (and the pairs
    # in state/); its contractions still run in float32 and accumulate in float64.
    bank_dtype: str = "bfloat16"
    # Carry the source's init decay (not in the paper): theta2^t = c_t theta2^0 + pi(theta1^t - c_t theta1^0),
    # c_t = <theta1^t, theta1^0> / |theta1^0|^2 per tensor. The paper's rule keeps all of theta2^0 and
    # subtracts the decayed share of the source's own init, a second random init (see worker.py).
    init_decay: bool = False
    eval_batch_size: int = 512
    # FGMT, GMT and Oracle refuse (unless forced) a spec that permutes less than this share of the
    # model's tensors: with nothing permuted they cost their gradients and return Naive.
    min_coverage: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.schedule not in (*SCHEDULES, "actual"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {(*SCHEDULES, 'actual')}")
        if self.steps is None and self.schedule != "actual":
            raise ConfigError("a linear schedule needs steps >= 1")
        for name in ("grad_batches", "batch_size", "max_sweeps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bank_dtype not in BANK_DTYPES:
            raise ConfigError(f"unknown bank_dtype {self.bank_dtype!r}; choose one of {BANK_DTYPES}")
        if self.lap not in LAP_SOLVERS:
            raise ConfigError(f"unknown LAP solver {self.lap!r}; choose one of {LAP_SOLVERS}")
        for name in ("tol", "rtol"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_every < AUTO_EVAL:
            raise ConfigError(f"eval_every must be >= 0 (or {AUTO_EVAL}: a schedule chosen by T), got {self.eval_every}")
        for name in ("bn_batches", "val_subset", "step_sweeps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"min_coverage is a share of the model's tensors, from 0 to 1; got {self.min_coverage}")
        check_seed("seed", self.seed)
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")

    def evaluates(self, step: int, last: int) -> bool:
        if self.eval_every == AUTO_EVAL:
            return auto_evaluates(step, last)
        return step == last or (self.eval_every > 0 and step % self.eval_every == 0)


AUTO_EVAL = -1  # eval_every: the schedule of eval_steps


def auto_evaluates(step: int, last: int, spread: int = 10, tail: float = 1 / 6) -> bool:
    """Whether the default schedule evaluates ``step`` of ``last``: every ceil(T / spread)-th step,
    and each of the last min(T x tail, 2 x spread) steps.

    A transfer's val accuracy rises fast and then creeps up or wobbles near the end, where the
    cosine schedule's points barely move and only the permutation changes: the best step is
    found there, while the early steps only draw the curve. T=10 evaluates every step, T=30 13
    of them, T=100 24, T=1000 29.
    """
    stride = -(-last // spread)  # ceil
    return step % stride == 0 or step > last - min(int(last * tail), 2 * spread)


def eval_steps(last: int) -> list[int]:
    """The steps the default schedule evaluates."""
    return [s for s in range(1, last + 1) if auto_evaluates(s, last)]
