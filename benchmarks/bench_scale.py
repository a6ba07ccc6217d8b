"""Scale-out transfer, measured from outside the backend's own accounting: driver bytes and calls
per step, each rank's busy share, and wall time against the local backend.

    git archive <previous design's commit> raytraj | tar -x -C /tmp/before   # optional: the "before" rows
    python benchmarks/bench_scale.py --before /tmp/before --out benchmarks/results/scale.md

Meters (none of them is the backend's own count):

* driver TCP bytes: the kernel's per-socket counters (``ss -tinp``: bytes_sent + bytes_received)
  of every TCP socket this process holds, sampled after each evaluated step. Ray's calls to actors
  and their results go over these sockets; large objects go through the node's object store instead
  (shared memory), so ``ray.put`` and ``ray.get`` are counted too:
* put/get bytes: every ``ray.put`` argument and ``ray.get`` result this process makes, pickled;
* calls: every actor method and task this process submits (Ray's ``_remote``);
* rank CPU: each rank's process CPU seconds (user + sys) from ``/proc/PID/stat``, over wall time;
* rank runnable: the share of 100 Hz samples of ``/proc/PID/task/TID/stat`` in which the rank's step
  thread (its busiest thread; torch has one thread per rank) is running or runnable (state R), not
  sleeping in a collective's wait. Unlike the CPU share, it does not fall when the ranks outnumber
  free cores: a rank waiting for a core is still busy, one waiting for a peer is not.

Steady state is the mean over the steps after the first two (start-up and the first solve).
The "before" rows run the same script on a checkout of the previous, driver-orchestrated design
(``--before DIR``), in a subprocess with that checkout first on the path.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK = os.sysconf("SC_CLK_TCK")


def tcp_bytes(pid: int) -> int:
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout
    total, mine = 0, False
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):
            mine = f"pid={pid}," in line
            continue
        if mine:
            total += sum(int(v) for v in re.findall(r"bytes_(?:sent|received):(\d+)", line))
    return total


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")


class RayMeter:
    """Counts what this process asks of Ray, at Ray's own API."""

    def __init__(self):
        import ray
        import ray.actor
        import ray.remote_function

        self.calls = self.put = self.got = 0
        self.paused = False
        meter = self
        for cls in (ray.actor.ActorMethod, ray.remote_function.RemoteFunction):
            original = cls._remote

            def counted(self, *a, _original=original, **k):
                if not meter.paused:
                    meter.calls += 1
                return _original(self, *a, **k)

            cls._remote = counted
        put, get = ray.put, ray.get

        def counted_put(value, *a, **k):
            if not meter.paused:
                meter.put += _size(value)
            return put(value, *a, **k)

        def counted_get(refs, *a, **k):
            value = get(refs, *a, **k)
            if not meter.paused:
                meter.got += _size(value)
            return value

        ray.put, ray.get = counted_put, counted_get


def _size(obj) -> int:
    try:
        return len(pickle.dumps(obj, protocol=5))
    except Exception:  # noqa: BLE001
        return 0


class StateSampler:
    """Samples the scheduler state of every thread of each pid at ``hz``, from a thread of this process.

    A rank's steps run on one of its threads (Ray's task thread; torch has one intra-op thread per
    rank); the others are Ray's gRPC and I/O threads. The step thread is the one with the most CPU
    ticks inside the measured spans, and its samples are the rank's."""

    def __init__(self, hz: float = 100.0):
        import threading

        self.pids, self.samples, self.period = [], [], 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, pids):
        self.pids = list(pids)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.period):
            self.samples.append((time.perf_counter(), [
                {tid: (fields[0], int(fields[11]) + int(fields[12])) for tid, fields in _thread_stats(p)}
                for p in self.pids]))

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def runnable_in(self, windows: list[list[tuple[float, float]]]) -> list[float]:
        """Per pid, the share of samples inside its own windows (spans of the monotonic clock) in which
        its step thread (the most CPU ticks over those spans) is in state R."""
        out = []
        for i, spans in enumerate(windows):
            per_span = [[s[i] for t, s in self.samples if a <= t <= b] for a, b in spans]
            inside = [states for span in per_span for states in span]
            if not inside:
                out.append(float("nan"))
                continue
            ticks = {}  # per thread, the ticks gained inside the spans (a thread born inside one from 0)
            for span in filter(None, per_span):
                for tid, (_, tk) in span[-1].items():
                    ticks[tid] = ticks.get(tid, 0) + tk - span[0].get(tid, ("", 0))[1]
            tid = max(ticks, key=ticks.get, default=None)
            out.append(sum(s.get(tid, ("",))[0] == "R" for s in inside) / len(inside))
        return out

    def runnable(self, t0: float, t1: float) -> list[float]:
        """Per pid, the share of samples in [t0, t1] in which its step thread is in state R."""
        return self.runnable_in([[(t0, t1)]] * len(self.pids))


def _thread_stats(pid: int):
    """(tid, fields after the command name) of each thread of pid; none once it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                yield tid, f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue


def ask_ranks(meter, method: str, **kwargs) -> list:
    """Each of this run's rank (or worker) actors' answer to ``method``, in name order, asked with the
    meter paused (the asking is the bench's, not the transfer's)."""
    import ray

    meter.paused = True
    try:
        names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["name"].startswith("raytraj-"))
        return [ray.get(getattr(ray.get_actor(n), method).remote(**kwargs)) for n in names]
    finally:
        meter.paused = False


def measured_run(src, out, cfg, workers, meter, windows: bool = False):
    """One transfer with samples after each evaluated step; per-step rates over the steady state.
    With ``windows``, each rank's gradient phases are asked for after each step (calls the traffic
    columns then count), and the rank's runnable share is read over them too."""
    from raytraj.runfolder import RunFolder
    from raytraj.transfer import transfer

    shutil.rmtree(out, ignore_errors=True)
    samples, pids = [], []
    pid = os.getpid()
    states = StateSampler()
    spans = {}  # rank -> its gradient phases (start, end), as the rank timed them

    def sample(step, acc):
        if workers and not pids:
            pids.extend(r["pid"] for r in ask_ranks(meter, "describe"))
            states.start(pids)
        if workers and windows and step >= 2:
            for k, r in enumerate(ask_ranks(meter, "stats", windows=True)):
                w = r.get("grad_windows", [])
                spans.setdefault(k, set()).update(tuple(x) for x in w)
        samples.append({"step": step, "t": time.perf_counter(), "tcp": tcp_bytes(pid) if workers else 0,
                        "calls": meter.calls, "put": meter.put, "got": meter.got,
                        "cpu": [cpu_s(p) for p in pids]})

    t0, c0 = time.perf_counter(), time.process_time()
    options = {"workers": workers, "cpus_per_worker": 1} if workers else None
    if "ray_config" in inspect.signature(transfer).parameters:
        from raytraj.ray_config import RayConfig

        ray = {"ray_config": RayConfig(**options) if options else None}
    else:  # the previous design's checkout takes its options as a dict
        ray = {"backend_options": options}
    try:
        m = transfer(src, out, cfg, target_seed=2, backend="ray" if workers else "local", progress=False,
                     on_eval=sample, **ray)
    finally:
        states.stop()
    wall = time.perf_counter() - t0
    steady = [s for s in samples if s["step"] >= 2]  # on_eval(s) runs once step s+1 is done
    row = {"wall_s": wall, "driver_cpu_s": time.process_time() - c0, "timing": m["timing"],
           "perm": RunFolder(out).perm()["final"], "val_acc": m["val_acc"], "ranks": workers or 0,
           "metered": m.get("traffic", {}).get("driver_bytes")}
    if workers and len(steady) >= 2:
        a, b = steady[0], steady[-1]
        steps = b["step"] - a["step"]
        dt = b["t"] - a["t"]
        row.update({"steps_measured": steps, "tcp_per_step": (b["tcp"] - a["tcp"]) / steps,
                    "idle_tcp_per_s": IDLE.get("tcp_per_s"), "s_per_step": dt / steps,
                    "tcp_net_per_step": (b["tcp"] - a["tcp"] - IDLE.get("tcp_per_s", 0.0) * dt) / steps,
                    "calls_per_step": (b["calls"] - a["calls"]) / steps,
                    "put_get_per_step": (b["put"] + b["got"] - a["put"] - a["got"]) / steps,
                    "rank_busy": [(cb - ca) / dt for ca, cb in zip(a["cpu"], b["cpu"])],
                    "rank_runnable": states.runnable(a["t"], b["t"]), "state_samples": len(states.samples),
                    "startup_tcp": samples[0]["tcp"], "startup_put": samples[0]["put"]})
        if spans:  # the steady steps' gradient phases only
            steady_spans = [sorted(w for w in spans[k] if a["t"] - 1e-3 <= w[0] <= b["t"]) for k in sorted(spans)]
            row["rank_runnable_grad"] = states.runnable_in(steady_spans)
            row["grad_span_s"] = [sum(e - s for s, e in w) for w in steady_spans]
        ranks = m.get("traffic", {}).get("ranks")
        if ranks:
            row["grad_busy_reported"] = [r["grad_s"] / r["grad_wall_s"] for r in ranks if r.get("grad_wall_s")]
    return row


def traffic_cases(work):
    from raytraj.transfer import TransferConfig

    mlp = source(work, "mlp512", "mlp", "mnist1d", 2, hidden=[512, 512])
    resnet = source(work, "resnet20", "resnet20", "digits", 1, width=0.5)
    return [
        ("MLP-512 FGMT T=16, grad_batches=4", mlp,
         TransferConfig(method="fgmt", steps=16, grad_batches=4, seed=0)),
        ("ResNet-20 w0.5 GMT T=5", resnet,
         TransferConfig(method="gmt", steps=5, grad_batches=1, seed=0, bn_batches=2)),
    ]


def source(work, name, model, data, epochs, **model_args):
    from raytraj import fs
    from raytraj.train import train_from_args
    from raytraj.trajectory import TrajectoryStore

    path = os.path.join(work, name)
    if not (fs.exists(fs.join(path, "trajectory.json")) and TrajectoryStore(path).complete):
        train_from_args(model, data, path, seed=1, epochs=epochs, model_args=model_args, progress=False)
    return path


IDLE = {}  # the driver's TCP bytes per second while it waits, with the cluster up (Ray's own background)


def idle_rate(seconds: float = 20.0) -> float:
    """Bytes per second on the driver's TCP sockets while it makes no call: Ray's background (GCS
    polls, task-event and metrics reports), which any step pays in proportion to its wall time."""
    pid = os.getpid()
    time.sleep(2)
    a, t0 = tcp_bytes(pid), time.perf_counter()
    time.sleep(seconds)
    IDLE["tcp_per_s"] = (tcp_bytes(pid) - a) / (time.perf_counter() - t0)
    return IDLE["tcp_per_s"]


def with_cluster(fn):
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Two nodes of 2 logical CPUs each: up to 4 one-CPU ranks, spread over both.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        idle_rate()
        return fn()
    finally:
        ray.shutdown()
        cluster.shutdown()


def part_traffic(work, ranks, more=()):
    """Each case at ``ranks``; the first case also at each count of ``more`` (the world size's effect)."""
    meter = RayMeter()
    cases = traffic_cases(work)

    def runs():
        out = [(label, ranks, measured_run(src, os.path.join(work, f"traffic-{i}"), cfg, ranks, meter))
               for i, (label, src, cfg) in enumerate(cases)]
        label, src, cfg = cases[0]
        out += [(label, n, measured_run(src, os.path.join(work, f"traffic-0-{n}"), cfg, n, meter)) for n in more]
        return out

    return with_cluster(runs)


def local_and_ray(work, name, hidden, steps, counts, windows=False):
    """GMT over MNIST-1D with an MLP of ``hidden`` units, grad_batches=8 of 512 samples (step s has 8s
    gradient units per model, so units >= ranks): locally, then at each rank count of ``counts``."""
    from raytraj.transfer import TransferConfig

    src = source(work, f"mlp{hidden[0]}", "mlp", "mnist1d", 2, hidden=hidden)
    cfg = TransferConfig(method="gmt", steps=steps, grad_batches=8, batch_size=512, seed=0)
    meter = RayMeter()
    runs = {"local": measured_run(src, os.path.join(work, f"{name}-local"), cfg, None, meter)}

    def ray_rows():
        for n in counts:
            runs[f"ray, {n} ranks"] = measured_run(src, os.path.join(work, f"{name}-ray{n}"), cfg, n, meter,
                                                   windows=windows)

    with_cluster(ray_rows)
    return runs


def part_scaling(work, steps, counts):
    return local_and_ray(work, "scale", [512, 512], steps, counts)


def part_busy(work, steps, counts):
    """Narrow layers (LAPs of milliseconds), so the steps are nearly all gradients; each rank's
    gradient phases are asked for, to read its runnable share over them alone."""
    return local_and_ray(work, "busy", [256, 256], steps, counts, windows=True)


def load() -> str:
    return open("/proc/loadavg").read().split()[:3].__str__()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-scale")
    ap.add_argument("--out", default="benchmarks/results/scale.md")
    ap.add_argument("--before", help="a checkout of the previous design's raytraj package, for the before rows")
    ap.add_argument("--steps", type=int, default=3, help="T of the wall-time runs")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--traffic-ranks", type=int, default=2)
    ap.add_argument("--traffic-more", default="3", help="world sizes the first traffic case runs at too")
    ap.add_argument("--skip-scaling", action="store_true", help="the traffic part only")
    ap.add_argument("--busy-steps", type=int, default=8, help="T of the busy-share runs")
    ap.add_argument("--part", choices=["traffic"], help=argparse.SUPPRESS)  # the before rows' subprocess
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # the local run's threads, as each rank's (1 CPU each): a like-for-like ratio
    if args.part:
        with open(args.json, "w") as f:
            more = [int(n) for n in args.traffic_more.split(",") if n]
            json.dump(part_traffic(args.work, args.traffic_ranks, more), f)
        return
    loads = [load()]
    t0 = time.time()
    work = os.path.abspath(args.work)
    partial = os.path.join(work, "partial.json")
    after = part_traffic(work, args.traffic_ranks, [int(n) for n in args.traffic_more.split(",") if n])
    loads.append(load())
    json.dump({"after": after}, open(partial, "w"))
    before = None
    if args.before:
        path = os.path.join(work, "before.json")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath(args.before), HERE])}
        # Run from the checkout: Ray's workers put the driver's working directory first on their path.
        subprocess.run([sys.executable, os.path.abspath(__file__), "--part", "traffic", "--json", path, "--work",
                        os.path.join(work, "before"), "--traffic-ranks", str(args.traffic_ranks),
                        "--traffic-more", args.traffic_more], env=env,
                       cwd=os.path.abspath(args.before), check=True)
        before = json.load(open(path))
        loads.append(load())
    json.dump({"after": after, "before": before}, open(partial, "w"))
    scaling = {} if args.skip_scaling else part_scaling(work, args.steps, [int(c) for c in args.workers.split(",")])
    loads.append(load())
    busy = part_busy(work, args.busy_steps, [int(c) for c in args.workers.split(",")])
    loads.append(load())
    took = time.time() - t0
    write(args, before, after, scaling, busy, loads, took)


def write(args, before, after, scaling, busy, loads, took):
    import ray
    import torch

    from report import write_report

    cmd = f"python benchmarks/bench_scale.py --out {args.out} --steps {args.steps} --workers {args.workers}" + (
        " --before DIR" if args.before else "")
    lines = [
        "# Scale-out transfer: driver traffic, calls, busy ranks and wall time, measured from outside", "",
        f"Command: `{cmd}` ({time.strftime('%Y-%m-%d')}, {took / 60:.0f} min; a shared machine with "
        f"{os.cpu_count()} cores, load average (1, 5, 15 min) at the start and after each part: "
        f"{' / '.join(loads)}; torch {torch.__version__}, ray {ray.__version__}). A two-node `ray.cluster_utils` "
        "cluster with 2 logical CPUs per node on those cores; every rank holds 1 CPU and 1 torch thread, as "
        "does the local run. 4 ranks on 2 physical cores are 2x oversubscribed before the other jobs' load.", "",
        "Meters: driver TCP = the kernel's byte counters of the driver's TCP sockets (`ss -tinp`); put/get = "
        "pickled sizes of every `ray.put` and `ray.get` the driver makes; calls = every actor call or task the "
        "driver submits (counted at Ray's API); rank CPU = each rank process's user+sys seconds over wall "
        "time (`/proc/PID/stat`). Per step = the mean over the steps after the first two. `metered` = what the "
        "backend's own `traffic.driver_bytes` says for the same steps.", "",
        "## Driver traffic per step", "",
        f"The driver's TCP bytes while idle (cluster up, no call): {IDLE.get('tcp_per_s', float('nan')):,.0f} B/s "
        "(Ray's own background: GCS polls, task-event and metrics reports); `net of idle` subtracts that rate "
        "times the step's wall time.", "",
        "| transfer | ranks | design | driver TCP bytes/step | net of idle | s/step | put+get bytes/step | calls/step "
        "| metered bytes/step | rank CPU share | same perm as the other design |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (label, ranks, new) in enumerate(after):
        rows = [("before", before[i][2])] if before else []
        rows.append(("this", new))
        for name, r in rows:
            metered = r["metered"][2:] if r["metered"] else []
            same = "-" if not before else str(before[i][2]["perm"] == new["perm"])
            lines.append(f"| {label} | {ranks} | {name} | {r['tcp_per_step']:,.0f} | "
                         f"{r.get('tcp_net_per_step', 0):,.0f} | "
                         f"{r.get('s_per_step', 0):.2f} | {r['put_get_per_step']:,.0f} | "
                         f"{r['calls_per_step']:.1f} | {sum(metered) / max(1, len(metered)):,.0f} | "
                         f"{' / '.join(f'{100 * b:.0f}%' for b in r['rank_busy'])} | {same} |")
    lines += ["", "## Wall time against ranks", "",
              f"GMT T={args.steps}, MNIST-1D, MLP 512-512, grad_batches=8 of 512 samples (step s has 8s gradient "
              "units per model, so units >= ranks), val evaluated after each step. Seconds. rank CPU share = "
              "each rank's CPU over the steady steps' wall time; gradient busy (reported) = each rank's compute "
              "time over its gradient phase's wall time, as the ranks report it.", "",
              "| run | wall s | ratio to local | setup s | grad s | solve s | rank CPU share | gradient busy (reported) "
              "| driver TCP bytes/step | calls/step | same perm as local |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = scaling.get("local")
    for name, m in scaling.items():
        t = m["timing"]
        cpu = " / ".join(f"{100 * b:.0f}%" for b in m.get("rank_busy", [])) or "-"
        grad = " / ".join(f"{100 * b:.0f}%" for b in m.get("grad_busy_reported", [])) or "-"
        tcp = f"{m['tcp_per_step']:,.0f}" if "tcp_per_step" in m else "-"
        calls = f"{m['calls_per_step']:.1f}" if "calls_per_step" in m else "-"
        lines.append(f"| {name} | {m['wall_s']:.1f} | {m['wall_s'] / base['wall_s']:.2f} | {t['setup_s']:.1f} | "
                     f"{t['grad_s']:.1f} | {t['solve_s']:.1f} | {cpu} | {grad} | {tcp} | {calls} | "
                     f"{m['perm'] == base['perm']} |")
    lines += ["", "## Busy share of the ranks", "",
              f"GMT T={args.busy_steps}, MNIST-1D, MLP 256-256, grad_batches=8 of 512 samples: step s has 16s "
              "gradient units (8s batches x 2 models), so units >= ranks, and the solve's 256-wide LAPs take "
              "milliseconds. Over the steady steps: runnable = share of 100 Hz samples in which the rank's step "
              "thread is in state R (running or waiting for a core, not sleeping in a collective's wait), over "
              "whole steps and over the rank's gradient phases only (their spans as the rank timed them, on the "
              "machine's monotonic clock; the samples and states are the kernel's); CPU = its user+sys seconds "
              "over wall time; reported = the rank's own compute time over its gradient phase's wall time.", "",
              "| run | s/step | samples | runnable, gradient phases | runnable, whole steps | rank CPU share "
              "| gradient busy (reported) | same perm as local |",
              "|---|---|---|---|---|---|---|---|"]
    base = busy.get("local")
    for name, m in busy.items():
        pct = lambda xs: " / ".join(f"{100 * b:.0f}%" for b in xs) or "-"  # noqa: E731
        lines.append(f"| {name} | {m.get('s_per_step', 0):.2f} | {m.get('state_samples', '-')} | "
                     f"{pct(m.get('rank_runnable_grad', []))} | "
                     f"{pct(m.get('rank_runnable', []))} | {pct(m.get('rank_busy', []))} | "
                     f"{pct(m.get('grad_busy_reported', []))} | {m['perm'] == base['perm']} |")
    write_report(args.out, lines)
    for row in [r for _, _, r in after + (before or [])] + list(scaling.values()) + list(busy.values()):
        row["perm_sha256"] = hashlib.sha256(json.dumps(row.pop("perm"), sort_keys=True).encode()).hexdigest()[:16]
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"before": before, "after": after, "scaling": scaling, "busy": busy, "loads": loads}, f, indent=1)


if __name__ == "__main__":
    main()
