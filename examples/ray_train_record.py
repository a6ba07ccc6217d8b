"""Record a trajectory from a Ray Train ``TorchTrainer`` (DDP, 2 CPU workers) with TrajectoryRecorder.

    python examples/ray_train_record.py --storage /tmp/rt --epochs 5
    cd examples && raytraj transfer --source /tmp/rt/trajectory --target-seed 7 --method fgmt --steps 10 \\
        --out /tmp/rt-fgmt

Every worker creates a recorder; only rank 0 writes (the others are no-ops), and DDP's
``module.`` prefix is looked through, so the store holds the plain model's tensors. The model
factory is recorded by import path (``ray_train_record:make_model``), so ``raytraj transfer`` can
rebuild the model when run from this folder (or with this folder on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_model(hidden: int = 64, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from raytraj import TrajectoryRecorder, load_data

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(make_model(config["hidden"]))  # DDP; rank 0's init is broadcast
    rec = TrajectoryRecorder(config["out"], model, model_factory="ray_train_record:make_model",
                             model_kwargs={"hidden": config["hidden"]}, data="digits", seed=config["seed"],
                             meta={"ray_train": {"world_size": world}})
    data = load_data("digits")
    x, y = data.x["train"], data.y["train"]
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    for epoch in range(config["epochs"]):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))[rank::world]  # this shard
        model.train()
        for idx in order.split(32):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()  # DDP averages the gradients over the workers
            opt.step()
        model.eval()
        with torch.no_grad():
            val = 100.0 * float((model(data.x["val"]).argmax(1) == data.y["val"]).float().mean())
        rec.record(model, val_acc=val)
        ray.train.report({"epoch": epoch + 1, "val_acc": val})
    rec.close(val_acc=val)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storage", required=True, help="the trainer's storage_path; the store goes to STORAGE/trajectory")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--address", help="a running Ray cluster (default: RAY_ADDRESS, or a new local one)")
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = args.storage if "://" in args.storage else os.path.abspath(args.storage)  # s3://, gs:// as given
    if args.address or os.environ.get("RAY_ADDRESS"):  # a running cluster, or inside `ray job submit`
        ray.init(address=args.address)
    else:  # a new local one; never a cluster some other process started on this machine
        ray.init(address="local", num_cpus=3, include_dashboard=False)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"out": storage.rstrip("/") + "/trajectory", "epochs": args.epochs,
                               "hidden": args.hidden, "seed": args.seed, "lr": 0.05},
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
            run_config=RunConfig(storage_path=storage, name="train"),
        )
        trainer.fit()
    finally:
        ray.shutdown()
    from raytraj import TrajectoryStore

    store = TrajectoryStore(storage.rstrip("/") + "/trajectory")
    print(f"recorded {store.num_steps} steps to {store.location}: val {store.meta['val_acc']:.1f}%")


if __name__ == "__main__":
    main()
