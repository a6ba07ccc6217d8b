"""The ``raytraj`` command line: argument parsing only; the work lives in the package.

Nothing heavy is imported at the top (torch, scipy, pyarrow, Ray): ``raytraj --help`` and an
argument error answer in a fraction of a CPU second; each command imports its work when it runs
(``benchmarks/bench_startup.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .backend_flags import backend_options
from .config import ConfigError, check_number
from .ray_errors import root_cause

# The user-error classes by module: the ones whose module is loaded are caught (an exception of a
# class never imported cannot have been raised), so the CLI need not import them up front.
_USER_ERROR_HOMES = {"raytraj.trajectory.store": "TrajectoryError", "raytraj.perm.spec": "SpecError",
                     "raytraj.checkpoint": "CheckpointError"}


# The zoo's model names, for choices and help without importing the zoo (torch); a test keeps them
# equal to raytraj.models.MODELS.
ZOO = ("mlp", "conv", "resnet20", "conv1d", "transformer")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (one line, exit 2), not a bug."""
    loaded = tuple(getattr(sys.modules[m], name) for m, name in _USER_ERROR_HOMES.items() if m in sys.modules)
    return (ConfigError, FileNotFoundError, FloatingPointError, *loaded)


def _key_values(items: list[str] | None) -> dict:
    """KEY=VALUE pairs; values are parsed as JSON when they can be (numbers, lists, true/false)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _recipe(args) -> dict:
    return {k: v for k, v in {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                              "save_every": args.save_every, "weight_decay": args.weight_decay,
                              "momentum": args.momentum, "warmup_epochs": args.warmup_epochs}.items()
            if v is not None}


def cmd_train(args):
    from .train import train_from_args

    r = train_from_args(args.model, args.data, args.out, seed=args.seed, init=args.init, new_head=args.new_head,
                        model_args=_key_values(args.model_arg), progress=not args.quiet,
                        data_args=_key_values(args.data_arg), head=args.head_module, **_recipe(args))
    print(f"recorded {r.steps + 1} steps to {r.location}: val {r.val_acc[-1]:.2f}%, test {r.test_acc:.2f}%, "
          f"{r.train_s:.1f}s of training ({r.total_s:.1f}s in all)")
    if r.at_chance_level:
        print(f"warning: {r.location} ends at chance level (val {r.val_acc[-1]:.1f}%, most frequent class "
              f"{r.chance_val_acc:.1f}%): there is no learning to transfer; try another --lr or more --epochs",
              file=sys.stderr)


def _transfer_config(args):
    from .transfer import TransferConfig

    fields = {"method": args.method, "schedule": args.schedule, "steps": args.steps, "grad_batches": args.grad_batches,
              "batch_size": args.batch_size, "seed": args.seed, "eval_every": args.eval_every,
              "bn_batches": args.bn_batches, "warm_start": not args.no_warm_start, "normalize": args.normalize,
              "min_coverage": args.min_coverage, "init_decay": getattr(args, "init_decay", None) or None,
              **_solver_fields(args)}
    # steps None: with schedule "actual" follow the recorded steps; a linear schedule takes TransferConfig's T
    return TransferConfig(**{k: v for k, v in fields.items()
                             if v is not None or (k == "steps" and args.schedule == "actual")})


def _transfer_choices() -> tuple[dict, tuple, tuple]:
    """TransferConfig's defaults by field, and the methods and schedules it accepts: the one home of both."""
    import dataclasses

    from .transfer.config import METHODS, SCHEDULES, TransferConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TransferConfig)}
    return defaults, METHODS, (*SCHEDULES, "actual")


def _train_defaults() -> dict:
    """TrainConfig's defaults by field: the one home of the training recipe's defaults."""
    import dataclasses

    from .train import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _add_solver_args(q) -> None:
    """The per-step solve's stopping rule, its LAP solver, and the evaluation subset."""
    defaults = _transfer_choices()[0]
    q.add_argument("--rtol", type=float, help="stop a step's solve when a sweep gains less than RTOL x the objective "
                   f"(default {defaults['rtol']:g}; 0: the absolute rule alone)")
    q.add_argument("--tol", type=float,
                   help=f"... or at most TOL in absolute terms (default {defaults['tol']:g}: the official code's "
                        "epsilon, applied to the sweep's total gain)")
    q.add_argument("--step-sweeps", type=int, help="at most N sweeps in each step but the last, which goes on from "
                   f"there (default {defaults['step_sweeps']}; 0: no cap)")
    from .transfer.config import BANK_DTYPES, LAP_SOLVERS

    q.add_argument("--lap", choices=LAP_SOLVERS,
                   help=f"LAP solver (default {defaults['lap']}: the torch auction when the cost matrices are on a "
                   "GPU, else exact scipy, whatever is installed; sparse: groups of 1024+ units restricted to a few "
                   "candidates per row and column, solved by OR-tools where installed (the fastlap extra), local "
                   "backend only; see benchmarks/results/cost.md)")
    q.add_argument("--bank-dtype", choices=BANK_DTYPES,
                   help=f"how the pair bank stores gradient pairs (default {defaults['bank_dtype']}: half the memory "
                   "of float32; contractions run in float32)")
    q.add_argument("--val-subset", type=int, help="evaluate each step on N val samples drawn from the seed "
                   f"(default {defaults['val_subset']}: all of val)")


def _add_schedule_args(q, defaults: dict, schedules) -> None:
    """The transfer options every transfer command shares, with TransferConfig's defaults."""
    from .transfer.config import AUTO_EVAL

    q.add_argument("--schedule", default=defaults["schedule"], choices=schedules,
                   help=f"how the T steps sample the trajectory (default {defaults['schedule']})")
    q.add_argument("--grad-batches", type=int, default=defaults["grad_batches"],
                   help=f"mini-batches averaged per gradient (default {defaults['grad_batches']})")
    q.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                   help=f"gradient mini-batch size (default {defaults['batch_size']})")
    q.add_argument("--seed", type=int, default=defaults["seed"],
                   help=f"seeds the batches and the solver's order (default {defaults['seed']})")
    q.add_argument("--eval-every", type=_eval_every, default=defaults["eval_every"], metavar="{auto,K}",
                   help="evaluate every K steps (0: only the last; default "
                   f"{'auto' if defaults['eval_every'] == AUTO_EVAL else defaults['eval_every']}; auto: about ten "
                   "steps spread over the run and every step of its last sixth)")


def _eval_every(text: str) -> int:
    from .transfer.config import AUTO_EVAL

    if text == "auto":
        return AUTO_EVAL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, got {text!r}") from None


def _solver_fields(args) -> dict:
    return {k: getattr(args, k) for k in ("rtol", "tol", "step_sweeps", "lap", "val_subset", "bank_dtype")
            if getattr(args, k, None) is not None}


def cmd_transfer(args):
    from .quickstart import format_table
    from .transfer import transfer

    m = transfer(args.source, args.out, _transfer_config(args), target_seed=args.target_seed,
                 target_init=args.target_init, new_head=args.new_head, oracle_target=args.oracle_target,
                 backend=args.backend, **backend_options(args, _runtime_env(args)), resume=args.resume,
                 progress=not args.quiet, force=args.force, **_user_code(args), spec=args.spec,
                 head=args.head_module, keep_state=args.keep_state)
    print(format_table([m]))
    from .runfolder import RunFolder

    print(f"wrote {RunFolder(args.out).metrics_path}")


def cmd_finetune(args):
    from .transfer.finetune import finetune

    r = finetune(args.run, args.out, epochs=args.epochs, lr=args.lr, progress=not args.quiet, **_user_code(args))
    print(f"fine-tuned {r.steps} epochs from {args.run}: val " + ", ".join(f"{v:.1f}" for v in r.val_acc)
          + f"; test {r.test_acc:.2f}%")


def cmd_eval(args):
    from .evaluation import evaluate_path

    r = evaluate_path(args.path, split=args.split, which=args.which, **_user_code(args))
    print(f"{r['model']}: {r['split']} accuracy {r['accuracy']:.2f}%")


def cmd_plot(args):
    from .plot import plot_runs

    print(plot_runs(args.runs, args.out, title=args.title))


def cmd_quickstart(args):
    from .quickstart import quickstart

    quickstart(args.out, progress=not args.quiet)


def cmd_spec(args):
    import warnings

    from .data import load_data
    from .models import build_model, config_for_data
    from .perm import SpecInferenceWarning
    from .recorded import check_model_takes_data, data_config
    from .transfer.problem import coverage_of, infer_checked_spec

    data = load_data(data_config(args.data, _key_values(args.data_arg)) or "digits")
    if args.model_arg and not args.model:
        raise ConfigError("--model-arg goes with --model")
    if args.spec and not args.model:
        raise ConfigError("--spec goes with --model")
    for name in [args.model] if args.model else list(ZOO):
        try:
            cfg = config_for_data(name, data.input_shape, data.num_classes, **_key_values(args.model_arg))
        except ConfigError as e:
            if args.model:
                raise
            print(f"{name}: skipped ({e})")
            continue
        check_model_takes_data(cfg, data)
        with warnings.catch_warnings():  # the coverage line below says what is left unpermuted
            warnings.simplefilter("ignore", SpecInferenceWarning)
            spec = infer_checked_spec(cfg, data, args.spec)
        cov = coverage_of(spec, build_model(cfg, 0), data)
        print(f"{name} on {data.config.describe()}: spec checked, {len(spec.sizes)} groups, "
              f"{sum(spec.sizes.values())} permuted units; {cov.line()}")
        if args.verbose:
            print(spec.summary())


def _tune_options(args) -> dict:
    return {"storage": args.storage, "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
            "max_concurrent": args.max_concurrent, "resume": args.resume, "address": args.address,
            "runtime_env": _runtime_env(args)}


def _base_transfer(args):
    from .transfer import TransferConfig

    from .transfer.config import QUICK_STEPS

    # schedule "actual" follows the recorded steps; the default T is for linear schedules only.
    steps = args.steps if args.steps is not None else (None if args.schedule == "actual" else QUICK_STEPS)
    # --bn-batches unset: TransferConfig's default
    bn = {} if getattr(args, "bn_batches", None) is None else {"bn_batches": args.bn_batches}
    return TransferConfig(method=args.method, steps=steps, schedule=args.schedule, grad_batches=args.grad_batches,
                          batch_size=args.batch_size, seed=args.seed, eval_every=args.eval_every,
                          **bn, **_solver_fields(args))


def cmd_ensemble(args):
    from .tune import run_ensemble

    if args.recipe:
        _apply_recipe(args)
    r = run_ensemble(args.source, args.out, members=args.members, cfg=_base_transfer(args), targets=args.targets,
                     new_head=args.new_head, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                     **_tune_options(args))
    print("members' test accuracy: " + ", ".join(f"{m['test_acc']:.2f}" for m in r["members"]))
    print("ensemble test accuracy by size k: " + ", ".join(f"{a:.2f}" for a in r["ensemble_acc_by_size"]))
    print(f"ensemble of {len(r['members'])}: {r['ensemble_test_acc']:.2f}% (mean member {r['mean_member_test_acc']:.2f}%, "
          f"source {r['source_test_acc']:.2f}%) in {r['timing']['wall_s']:.1f}s; wrote {args.out}/ensemble.json")


def _apply_recipe(args) -> None:
    """The preset's values, except for the options given on the command line."""
    from .recipes import ensemble_recipe

    given = _given_options(args.argv)
    for dest, value in ensemble_recipe(args.recipe).options().items():
        if dest not in given:
            setattr(args, dest, value)


def _given_options(argv: list[str]) -> set[str]:
    """The destinations of the options on the command line, as opposed to defaults: argv parsed
    again by a parser without defaults."""
    parser = build_parser()
    todo = [parser]
    while todo:
        p = todo.pop()
        p._defaults.clear()  # set_defaults(func=...)
        for action in p._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())
    return set(vars(parser.parse_args(argv)))


def cmd_distill(args):
    from .tune import distill

    r = distill(args.ensemble, args.out, student=args.student, student_args=_key_values(args.student_arg),
                epochs=args.epochs, lr=args.lr, seed=args.seed, progress=not args.quiet)
    print(f"teacher ensemble {r['teacher_test_acc']:.2f}% | student on soft labels "
          f"{r['soft_label_student']['test_acc']:.2f}% | on hard labels {r['hard_label_student']['test_acc']:.2f}% (test)")


def cmd_sweep(args):
    from .tune import format_results, parse_params, run_sweep
    from .tune.sweep import format_best

    params = parse_params(args.param)
    target = {"target_seed": args.target_seed} if args.target_init is None else \
        {"target_init": args.target_init, "new_head": args.new_head}
    rows = run_sweep(args.source, args.out, params, base=_base_transfer(args), target=target, samples=args.samples,
                     search=args.search, scheduler=args.scheduler, finetune_epochs=args.finetune_epochs,
                     finetune_lr=args.finetune_lr, **_tune_options(args))
    print(format_results(rows, list(params)))
    print(format_best(rows, list(params)))
    print(f"wrote {args.out}/results.parquet, results.csv, best.json")


def add_user_code_args(q, spec: bool = False) -> None:
    """--model/--data (and --spec, --head-module): your own code by import path, replacing what the store records."""
    q.add_argument("--model", help="model factory package.module:function (default: the one the store records)")
    q.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="keyword argument of --model")
    q.add_argument("--data", help="data function package.module:function or bundled data (default: the store's)")
    q.add_argument("--data-arg", action="append", metavar="KEY=VALUE", help="keyword argument of --data")
    if spec:
        q.add_argument("--spec", metavar="PKG.MOD:FN", help="a PermutationSpec, or a function of the model returning "
                       "one, instead of inference (still proved with check_spec)")
        q.add_argument("--head-module", default="head", help="the classifier's module name, for --new-head")


def add_runtime_env_args(q) -> None:
    """A Ray runtime_env carrying your own modules to the workers."""
    q.add_argument("--working-dir", help="Ray: ship this folder to every worker and import from it")
    q.add_argument("--py-modules", help="Ray: comma-separated package folders (or wheels) to ship to every worker")


def _user_code(args) -> dict:
    from .models import model_config
    from .recorded import data_config

    model_args = _key_values(args.model_arg)
    if model_args and not args.model:
        raise ConfigError("--model-arg goes with --model package.module:function")
    model = model_config(args.model, **model_args) if args.model else None
    return {"model": model, "data": data_config(args.data, _key_values(args.data_arg))}


def _runtime_env(args) -> dict | None:
    """--working-dir/--py-modules as a runtime_env; they are also put on this process's import path,
    since the driver builds the model too."""
    import os

    env = {}
    if getattr(args, "working_dir", None):
        if not os.path.isdir(args.working_dir):
            raise ConfigError(f"--working-dir {args.working_dir} is not a folder")
        env["working_dir"] = os.path.abspath(args.working_dir)
        sys.path.insert(0, env["working_dir"])
    if getattr(args, "py_modules", None):
        mods = [os.path.abspath(m) for m in args.py_modules.split(",") if m.strip()]
        missing = [m for m in mods if not os.path.exists(m)]
        if missing:
            raise ConfigError(f"--py-modules: {', '.join(missing)} do not exist; give package folders or wheels")
        env["py_modules"] = mods
        sys.path[:0] = [os.path.dirname(m) for m in mods if os.path.isdir(m)]
    if env and getattr(args, "backend", "ray") != "ray":
        raise ConfigError("--working-dir and --py-modules need --backend ray")
    return env or None


def _add_recipe_args(q) -> None:
    """The training recipe's options, with TrainConfig's defaults (--epochs apart)."""
    recipe = _train_defaults()
    for flag, typ, what in (("--lr", float, "initial learning rate"), ("--batch-size", int, "mini-batch size"),
                            ("--save-every", int, "record every N iterations, 0: every epoch"),
                            ("--weight-decay", float, "SGD weight decay"), ("--momentum", float, "SGD momentum"),
                            ("--warmup-epochs", float, "linear warm-up epochs")):
        name = flag[2:].replace("-", "_")
        q.add_argument(flag, type=typ, default=recipe[name], help=f"{what} (default {recipe[name]:g})")


def cmd_compare(args):
    from .compare import compare, format_table, parse_pairs

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    r = compare(args.out, model=args.model, data=args.data, pretrain_data=args.pretrain_data,
                pairs=parse_pairs(args.pairs), methods=methods, steps=args.steps, seed=args.seed,
                finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                model_args=_key_values(args.model_arg), recipe=_recipe(args), progress=not args.quiet)
    print(format_table(r))
    print(f"wrote {args.out}/compare.json and {r['plot']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raytraj", description="Transfer learning trajectories of neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    defaults, methods, schedules = _transfer_choices()

    def common(q):
        q.add_argument("--quiet", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train a model and record its trajectory")
    t.add_argument("--model", required=True,
                   help=f"{', '.join(ZOO)}, or your factory package.module:function")
    t.add_argument("--data", required=True, help="digits, digits[0-4], mnist1d:20000, npz:PATH, "
                   "fashion-mnist[:PATH][:N], cifar10:ROOT, or your data function package.module:function")
    t.add_argument("--data-arg", action="append", metavar="KEY=VALUE", help="keyword argument of a data function")
    t.add_argument("--head-module", default="head", help="the classifier's module name, for --new-head")
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="trajectory store: a folder, s3://... or gs://...")
    t.add_argument("--init", help="start from STORE[:STEP] (fine-tuning a pre-trained model)")
    t.add_argument("--new-head", action="store_true", help="re-initialise the classifier head (seeded)")
    _add_recipe_args(t)
    t.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. hidden=[256,256]")
    common(t)
    t.set_defaults(func=cmd_train)

    x = sub.add_parser("transfer", help="transfer a recorded trajectory to a new init")
    x.add_argument("--source", required=True, help="the source trajectory store")
    tgt = x.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--target-seed", type=int, help="a new random init with this seed")
    tgt.add_argument("--target-init", help="a pre-trained target: STORE[:STEP]")
    x.add_argument("--new-head", action="store_true", help="with --target-init: re-initialise its head")
    x.add_argument("--method", required=True, choices=methods)
    x.add_argument("--oracle-target", help="oracle: the target init actually trained with the source recipe")
    x.add_argument("--steps", type=int,
                   help=f"T (default {defaults['steps']}; with --schedule actual: the recorded steps)")
    _add_schedule_args(x, defaults, schedules)
    x.add_argument("--bn-batches", type=int, default=defaults["bn_batches"],
                   help=f"batches for BatchNorm recalibration (default {defaults['bn_batches']})")
    x.add_argument("--no-warm-start", action="store_true", help="cold-start every solve (the official code)")
    x.add_argument("--normalize", action="store_true", help="normalise each matching term")
    x.add_argument("--init-decay", action="store_true",
                   help="carry the source's init decay: c theta2^0 + pi(theta1^t - c theta1^0), c the share of its init "
                   "each source tensor keeps (not in the paper; helps weight-decayed CNNs, see the README)")
    _add_solver_args(x)
    x.add_argument("--out", required=True)
    x.add_argument("--resume", action="store_true", help="continue an interrupted transfer in --out")
    x.add_argument("--keep-state", action="store_true",
                   help="keep --out/state (the gradient pairs and progress) after the run succeeds (by default it is removed then)")
    x.add_argument("--force", action="store_true", help="transfer a source that ends at chance level, or with a "
                   "spec that permutes less than --min-coverage")
    x.add_argument("--min-coverage", type=float, default=defaults["min_coverage"], metavar="SHARE",
                   help="fgmt/gmt/oracle refuse a spec that permutes less than this share of the model's tensors "
                        f"(default {defaults['min_coverage']}; 0 refuses only a spec that permutes nothing)")
    x.add_argument("--backend", default="local", choices=["local", "ray"])
    x.add_argument("--address", help="Ray cluster: auto, or ray://HOST:PORT (default: start a local one)")
    x.add_argument("--workers", type=int, help="Ray gradient workers")
    x.add_argument("--cpus-per-worker", type=float)
    x.add_argument("--gpus-per-worker", type=float)
    x.add_argument("--placement-timeout", type=float, metavar="SECONDS",
                   help="how long to wait for Ray to place the workers (default 600: autoscalers may start GPU "
                        "nodes from zero); a request no node of a fixed local cluster can hold fails at once")
    x.add_argument("--device", help="local backend: cpu or cuda (default: cuda when available)")
    add_user_code_args(x, spec=True)
    add_runtime_env_args(x)
    common(x)
    x.set_defaults(func=cmd_transfer)

    f = sub.add_parser("finetune", help="train on from a transfer run's best model")
    f.add_argument("--from", dest="run", required=True, help="a transfer run folder")
    f.add_argument("--epochs", type=int, required=True)
    f.add_argument("--lr", type=float, help="initial lr (default: the source recipe's)")
    f.add_argument("--out", required=True)
    add_user_code_args(f)
    common(f)
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser("eval", help="accuracy of a transfer run's model or of STORE[:STEP]")
    e.add_argument("path")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--which", default="best", choices=["best", "final"])
    add_user_code_args(e)
    e.set_defaults(func=cmd_eval)

    pl = sub.add_parser("plot", help="accuracy against transfer step for several runs")
    pl.add_argument("runs", nargs="+", help="transfer run folders (and training stores)")
    pl.add_argument("--out", required=True, help="PNG file")
    pl.add_argument("--title")
    pl.set_defaults(func=cmd_plot)

    q = sub.add_parser("quickstart", help="train, transfer with Naive and FGMT, table and plot, on digits")
    q.add_argument("--out", default="runs/quickstart")
    common(q)
    q.set_defaults(func=cmd_quickstart)

    def tune_common(q, method_default):
        from .transfer.config import QUICK_STEPS

        q.add_argument("--source", required=True)
        # Oracle needs a trained target per member, which the Tune commands do not take.
        q.add_argument("--method", default=method_default, choices=[m for m in methods if m != "oracle"],
                       help=f"transfer method (default {method_default})")
        q.add_argument("--steps", type=int,
                       help=f"T (default {QUICK_STEPS}; with --schedule actual: the recorded steps)")
        _add_schedule_args(q, defaults, schedules)
        # Per evaluated step on a BatchNorm net: fewer batches make a member's evaluation cheaper.
        q.add_argument("--bn-batches", type=int,
                       help=f"batches for BatchNorm recalibration at each evaluated step (default {defaults['bn_batches']})")
        _add_solver_args(q)
        q.add_argument("--out", required=True)
        q.add_argument("--storage", help="Tune experiment storage: a path, s3://... or gs://... (default OUT/tune)")
        q.add_argument("--cpus-per-trial", type=float, default=1)
        q.add_argument("--gpus-per-trial", type=float,
                       help="GPUs per trial (default: 1 when the cluster has GPUs, else 0); a trial uses exactly "
                            "the GPU Ray assigns it")
        q.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
        q.add_argument("--address", help="Ray cluster: auto or ray://HOST:PORT (default: a local one)")
        q.add_argument("--resume", action="store_true",
                       help="continue an interrupted run (Tuner.restore, which unpickles Tune's state: --storage "
                            "must be trusted, and a local one is checked to be yours and not world-writable)")
        add_runtime_env_args(q)
        q.add_argument("--finetune-epochs", type=int, default=0, help="train each transfer on for E epochs")
        q.add_argument("--finetune-lr", type=float, help="its initial lr (default: the source's recipe lr)")

    en = sub.add_parser("ensemble", help="K transfers from K inits as parallel Tune trials, then their ensemble")
    tune_common(en, defaults["method"])
    en.add_argument("--members", type=int, required=True)
    en.add_argument("--targets", default="random", help="random (seeded inits) or STORE,STORE,... pre-trained inits")
    en.add_argument("--new-head", action="store_true", help="with pre-trained --targets: re-initialise their heads")
    from .recipes import ENSEMBLE_RECIPES

    en.add_argument("--recipe", choices=list(ENSEMBLE_RECIPES),
                    help="a measured preset of the members' transfer and subsequent training (fast: "
                         + ", ".join(f"{k} {v}" for k, v in ENSEMBLE_RECIPES["fast"].options().items())
                         + "); options given here override it")
    en.set_defaults(func=cmd_ensemble)

    di = sub.add_parser("distill", help="train a student on an ensemble's soft labels (vs hard labels)")
    di.add_argument("--ensemble", required=True, help="an ensemble output folder")
    di.add_argument("--student", default="mlp", choices=ZOO)
    di.add_argument("--student-arg", action="append", metavar="KEY=VALUE")
    di.add_argument("--epochs", type=int)
    di.add_argument("--lr", type=float)
    di.add_argument("--seed", type=int, default=0)
    di.add_argument("--out", required=True)
    common(di)
    di.set_defaults(func=cmd_distill)

    sw = sub.add_parser("sweep", help="tune transfer hyperparameters with Ray Tune")
    tune_common(sw, defaults["method"])
    sw.add_argument("--param", action="append", required=True, metavar="NAME=V1,V2",
                    help="a searched TransferConfig field, e.g. steps=10,20,40 (repeat for more)")
    sw.add_argument("--samples", type=int, default=1, help="repeats of the grid, or random samples")
    sw.add_argument("--search", default="grid", choices=["grid", "random"])
    sw.add_argument("--scheduler", choices=["asha"])
    sw_target = sw.add_mutually_exclusive_group()
    sw_target.add_argument("--target-seed", type=int, default=1000,
                           help="the target's init seed (default 1000; it must differ from the source's --seed)")
    sw_target.add_argument("--target-init")
    sw.add_argument("--new-head", action="store_true")
    sw.set_defaults(func=cmd_sweep)

    c = sub.add_parser("compare", help="a scenario end to end: source, Naive/FGMT/Oracle with fair seeds, the "
                                       "trained references and the training after; one table, one plot")
    c.add_argument("--model", required=True, help=f"{', '.join(ZOO)}, or your factory package.module:function")
    c.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. hidden=[512,512]")
    c.add_argument("--data", required=True, help="the data the source and target train on (pre-trained: fine-tune on)")
    c.add_argument("--pretrain-data", help="pre-trained scenario: pre-train both inits on this data first, then "
                   "fine-tune them on --data with new heads (e.g. --pretrain-data 'digits[0-4]' --data 'digits[5-9]')")
    c.add_argument("--pairs", default="1-2", help="source-target init seeds, e.g. 1-2 or 101-102,201-202 (the table "
                   "averages over pairs; default 1-2)")
    c.add_argument("--methods", default="naive,fgmt,oracle", help="transfer methods, comma-separated, among "
                   f"{', '.join(methods)} (default naive,fgmt,oracle)")
    c.add_argument("--steps", type=int, help=f"T of every transfer (default {defaults['steps']})")
    c.add_argument("--seed", type=int, default=defaults["seed"], help="the transfers' --seed S; with "
                   f"--pretrain-data also the seed of the target's new head (default {defaults['seed']})")
    c.add_argument("--epochs", type=int, required=True, help="epochs of every training (pre-training included)")
    _add_recipe_args(c)
    c.add_argument("--finetune-epochs", type=int, default=1, help="epochs of the training after, from FGMT, Naive "
                   "and the target init (0: none; default 1)")
    c.add_argument("--finetune-lr", type=float, help="its initial lr (default: the recipe's --lr)")
    c.add_argument("--out", required=True, help="a folder for every stage (an interrupted comparison continues)")
    common(c)
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("spec", help="infer and check a model's permutation spec, and print its coverage")
    s.add_argument("--data", help="bundled data or a data function package.module:function (default digits)")
    s.add_argument("--data-arg", action="append", metavar="KEY=VALUE", help="keyword argument of --data")
    s.add_argument("--model", help=f"a zoo model ({', '.join(ZOO)}) or your factory package.module:function "
                   "(default: every zoo model)")
    s.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    s.add_argument("--spec", metavar="PKG.MOD:FN", help="check and measure this spec instead of the inferred one")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=cmd_spec)

    from .analysis.cli import add_analyze_parser

    add_analyze_parser(sub)
    inf = sub.add_parser("info", help="what a trajectory store or a transfer run folder holds")
    inf.add_argument("path", help="a trajectory store, a transfer run folder, an ensemble or a sweep folder")
    inf.set_defaults(func=cmd_info)
    _add_everywhere(sub)
    from . import __version__

    p.add_argument("--version", action="version", version=f"raytraj {__version__}")
    return p


def _add_everywhere(sub) -> None:
    """--threads on every command, --overwrite on those that write a folder."""
    todo = [(name, q) for name, q in sub.choices.items()]
    while todo:
        name, q = todo.pop()
        nested = [a for a in q._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            todo += [(name, c) for c in nested[0].choices.values()]
            continue
        q.add_argument("--threads", type=int, metavar="N",
                       help="torch threads of this process (default: the CPUs not busy by the load average, at "
                            "least 1: torch's default of every CPU runs several times slower on a busy machine)")
        if name in WRITERS:
            q.add_argument("--overwrite", action="store_true",
                           help="delete what --out holds (a raytraj output) and start afresh")


def cmd_info(args):
    from .info import describe

    print(describe(args.path))


# Commands that write a folder (--out): it is locked for the run, gets a log.txt, and may be --overwrite-n.
WRITERS = ("train", "transfer", "finetune", "ensemble", "sweep", "distill", "quickstart", "analyze")


def _run(args) -> None:
    """The command, with --threads applied and its --out locked and logged (see raytraj/outfolder.py)."""
    from .outfolder import default_threads, inputs_of, output_folder

    import torch

    check_number("--threads", args.threads, minimum=1, integer=True)
    torch.set_num_threads(args.threads or default_threads())
    if args.command not in WRITERS:
        return args.func(args)
    with output_folder(args.out, args.argv, overwrite=args.overwrite, inputs=inputs_of(args), what=args.command):
        args.func(args)


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (a scheduler's stop, `kill`) ends a run as Ctrl-C does: state saved, one line, how to
    resume. It is passed on as SIGINT, so that whoever handles SIGINT now (Python, or Tune, which
    stops its trials cleanly) handles it."""
    import os
    import signal

    def on_term(signum, frame):
        _terminated.append(signum)
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)


_terminated: list[int] = []


def _saved_nothing(args) -> bool:
    """An interrupted command whose --out holds no work (none, or only its own bookkeeping)."""
    from . import fs
    from .runfolder import CONFIG
    from .writelock import BOOKKEEPING

    out = getattr(args, "out", None)
    if args.command not in WRITERS or not out:
        return False
    try:
        return all(n in BOOKKEEPING or n == CONFIG for n in fs.listdir(out))
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if argv is None:
        _sigterm_as_ctrl_c()
    try:
        try:
            from .progress import interval_s

            interval_s()  # a bad RAYTRAJ_PROGRESS_S fails now, not at the first progress line
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
                _run(args)
        except Exception as e:  # a Ray worker's bad input or OSError: map it, not Ray's wrapper and traceback
            cause = root_cause(e)
            if cause is e or not (isinstance(cause, (*user_errors(), OSError)) or out_of_memory(cause)):
                raise  # a bug: keep the worker's traceback
            raise cause from None
    except user_errors() as e:
        print(f"raytraj {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only or full disk, a file where a folder should be, unreachable storage
        print(f"raytraj {args.command}: error: {_os_error(e, getattr(args, 'out', None))}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        message = out_of_memory(e)
        if message is None:
            raise  # a bug
        print(f"raytraj {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM here, or one Tune caught (its message counts the unfinished trials)
        hint = " with --resume" if getattr(args, "resume", None) is not None else ""
        how = "terminated (SIGTERM)" if _terminated else "interrupted"
        if str(e):
            what = str(e)
        elif _saved_nothing(args):
            what = "nothing was saved yet: run the same command again to start"
        else:
            what = f"what was done is saved: run the same command{hint} to continue"
        print(f"raytraj {args.command}: {how}; {what}", file=sys.stderr)
        return 143 if _terminated else 130
    return 0


def _one_line_warnings(command: str, default):
    """Warnings that mark themselves ``one_line`` print as one line of the command's, not with a source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        if getattr(category, "one_line", False):
            print(f"raytraj {command}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show


def _os_error(e: OSError) -> str:
    """One line naming the file and the cause, with the fix where there is an obvious one."""
def out_of_memory(e: BaseException) -> str | None:
    """One line for an allocator's failure (torch on the CPU or a GPU, or Python's MemoryError),
    naming the size it tried; None for any other error."""
    import re

    text = str(e)
    if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in text
            or "not enough memory" in text):
        return None
    m = re.search(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]i?B)", text, re.IGNORECASE)
    size = ""
    if m:
        scale = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "KB": 1e3, "MB": 1e6, "GB": 1e9,
                 "TB": 1e12}[m[2]]
        n = float(m[1]) * scale
        size = f": could not allocate {n / 2**30:.1f} GiB" if n >= 2**30 else f": could not allocate {n / 2**20:.1f} MiB"
    where = "GPU memory" if type(e).__name__ == "OutOfMemoryError" else "memory"
    return (f"out of {where}{size}; choose a smaller model (--model-arg), --batch-size or data, or a machine with "
            "more memory")


def _os_error(e: OSError, out: str | None = None) -> str:
    """One line naming the file and the cause, with the fix where there is an obvious one.

    ``out`` is the command's output location: a file there that cannot be written calls for
    another --out; anywhere else (a source, a store, a cache) for that file's permissions."""
    import errno
    import re

    from .fs import StorageError

    if isinstance(e, StorageError):
        return str(e)

    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    text = f"{e.strerror or e}{where}".replace("\n", " ")
    code = e.errno
    if code is None:  # pyarrow puts the errno in the message only
        m = re.search(r"\[errno (\d+)\]", text, re.IGNORECASE)
        code = int(m.group(1)) if m else None
    fixes = {errno.ENOSPC: "free some space or choose another --out", errno.EROFS: "choose a writable --out",
             errno.EACCES: "choose an --out you may write to", errno.ENOTDIR: "a file stands where a folder is "
             "needed; choose another --out", errno.EEXIST: "choose another --out"}
    fix = fixes.get(code, "check the path and the storage it is on")
    named = getattr(e, "filename", None) or next(iter(re.findall(r"'(/[^']+)'", text)), None)
    if code in (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST) and not _within(named, out):
        fix = {errno.ENOTDIR: "a file stands where a folder is needed: check the path",
               errno.EEXIST: "a file stands in the way: check the path"}.get(
            code, "this user may not read or write it: fix its permissions (chmod) or run as its owner")
    return f"{text}; {fix}"


def _within(path: str | None, out: str | None) -> bool:
    """Is ``path`` the output location ``out`` or inside it? (Unknown paths count as inside.)"""
    from . import fs

    if not path or not out:
        return bool(out) and not path
    here, there = fs.absolute(out).rstrip("/"), fs.absolute(path).rstrip("/")
    return there == here or there.startswith(here + "/")


if __name__ == "__main__":
    sys.exit(main())
