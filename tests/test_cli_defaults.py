"""The CLI's defaults are the config dataclasses' (TransferConfig, TrainConfig), and its help shows them."""

import dataclasses

import pytest

from raytraj import cli
from raytraj.train import TrainConfig
from raytraj.transfer import TransferConfig
from raytraj.transfer.config import QUICK_STEPS


def subparser(name):
    (sub,) = [a for a in cli.build_parser()._actions if a.dest == "command"]
    return sub.choices[name]


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def shown(value, dest=None):
    from raytraj.transfer.config import AUTO_EVAL

    if dest == "eval_every" and value == AUTO_EVAL:
        return "auto"  # the evaluation schedule's name, not its sentinel
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_transfer_without_options_is_transfer_config_defaults():
    args = parse("transfer", "--source", "s", "--target-seed", "1", "--method", "gmt", "--out", "o")
    assert cli._transfer_config(args) == TransferConfig(method="gmt")
    actual = parse("transfer", "--source", "s", "--target-seed", "1", "--method", "gmt", "--out", "o",
                   "--schedule", "actual")
    assert cli._transfer_config(actual) == TransferConfig(method="gmt", schedule="actual", steps=None)


@pytest.mark.parametrize("command, extra", [("ensemble", ["--members", "2"]), ("sweep", ["--param", "steps=2"])])
def test_tune_commands_take_transfer_config_defaults_but_the_quick_t(command, extra):
    args = parse(command, "--source", "s", "--out", "o", *extra)
    assert cli._base_transfer(args) == TransferConfig(steps=QUICK_STEPS)
    assert f"default {QUICK_STEPS}" in _help(subparser(command), "steps")


@pytest.mark.parametrize("command, extra", [("ensemble", ["--members", "2"]), ("sweep", ["--param", "steps=2"])])
def test_tune_commands_pass_bn_batches_to_the_transfer(command, extra):
    args = parse(command, "--source", "s", "--out", "o", *extra, "--bn-batches", "2")
    assert cli._base_transfer(args) == TransferConfig(steps=QUICK_STEPS, bn_batches=2)


def test_ensemble_recipe_leaves_bn_batches_to_the_command_line():
    argv = ["ensemble", "--source", "s", "--out", "o", "--members", "2", "--recipe", "fast", "--bn-batches", "3"]
    args = parse(*argv)
    args.argv = argv
    cli._apply_recipe(args)
    assert cli._base_transfer(args).bn_batches == 3


def test_train_without_recipe_options_is_train_config_defaults():
    args = parse("train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--out", "o")
    assert TrainConfig(**cli._recipe(args)) == TrainConfig(epochs=3)


def _help(parser, dest):
    (action,) = [a for a in parser._actions if a.dest == dest]
    return action.help or ""


@pytest.mark.parametrize("command, config", [("transfer", TransferConfig), ("ensemble", TransferConfig),
                                             ("sweep", TransferConfig), ("train", TrainConfig)])
def test_help_shows_each_dataclass_default(command, config):
    parser = subparser(command)
    fields = {f.name: f.default for f in dataclasses.fields(config)}
    checked = 0
    for action in parser._actions:
        if action.dest not in fields or action.required or isinstance(fields[action.dest], bool):
            continue
        default = QUICK_STEPS if (command, action.dest) in (("ensemble", "steps"), ("sweep", "steps")) \
            else fields[action.dest]
        assert f"default {shown(default, action.dest)}" in (action.help or ""), (command, action.dest, action.help)
        checked += 1
    assert checked >= 6
