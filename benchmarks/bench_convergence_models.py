"""The step_sweeps cap beyond the MLP: FGMT with and without it on the CNN reproduction's
pre-trained scenarios (Conv8 + BatchNorm, ResNet-20; digits 0-4 -> 5-9, T=10, 3 seed pairs) and on a
model outside the zoo (the tests' user package: conv stem, GroupNorm, a self-coupled residual block,
Dropout; digits, random inits, 3 target seeds).

    python benchmarks/reproduce_cnn.py --work runs/reproduce-cnn   # the CNN sources, once
    PYTHONPATH=. python benchmarks/bench_convergence_models.py
"""
import os, shutil, statistics, torch, warnings
torch.set_num_threads(1)
from raytraj.transfer import TransferConfig, transfer
from raytraj.train import train_from_args
import sys
sys.path.insert(0, ".")
from tests.userpkg import importable, write_user_package  # noqa: E402
importable(write_user_package("/tmp/userpkg-root"))
root = "runs/reproduce-cnn"
out = "/tmp/check-models"; shutil.rmtree(out, ignore_errors=True)
for model in ("conv8-bn_pre", "resnet20_pre"):
    for cap in (0, 3):
        accs, laps = [], []
        for pair in ("101-102", "201-202", "301-302"):
            d = f"{root}/{model}/{pair}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = transfer(f"{d}/source", f"{out}/{model}/{pair}/cap{cap}", TransferConfig(steps=10, step_sweeps=cap),
                             target_init=f"{d}/pre-b", new_head=True, progress=False)
            accs.append(m["best_val_acc"]); laps.append(m["solver"]["laps_per_floor"])
        print(model, "step_sweeps", cap, "best val", [round(a, 1) for a in accs], "mean", round(statistics.mean(accs), 1),
              "LAPs/floor", round(statistics.mean(laps), 2), flush=True)
# a model outside the zoo, with a self-coupled group (h + relu(R h)) and dropout
src = f"{out}/resmlp-src"
train_from_args("byo_userpkg.nets:make_net", "digits", src, seed=1, epochs=10, progress=False)
for cap in (0, 3):
    accs = []
    for tseed in (2, 3, 4):
        m = transfer(src, f"{out}/resmlp/{tseed}/cap{cap}", TransferConfig(steps=10, step_sweeps=cap), target_seed=tseed,
                     progress=False)
        accs.append(m["best_val_acc"])
    print("userpkg ResMLP step_sweeps", cap, "best val", [round(a, 1) for a in accs], "mean", round(statistics.mean(accs), 1))
