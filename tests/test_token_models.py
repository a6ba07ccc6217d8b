"""Models as users bring them: token ids in (int64, never cast to float), a dict or a tuple out.
The adapter (``raytraj.logits_of``) reads the logits in training, transfer, evaluation and the
recorder's checks, with no user wrapper; a tiny nn.Embedding + nn.TransformerEncoder + head
classifier (tests/token_models.py) on synthetic token data goes through all of them."""

import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import raytraj
from raytraj.cli import main
from raytraj.config import ConfigError
from raytraj.data import dataset_from_splits
from raytraj.models.outputs import logits_of
from token_models import VOCAB, load, make_net

TRAIN = ["--data", "token_models:load", "--epochs", "4", "--batch-size", "32", "--lr", "0.2", "--quiet"]


class FakeModelOutput(OrderedDict):
    """What transformers' ModelOutput is: an ordered dict whose keys are also attributes."""


def test_logits_of_reads_tensors_dicts_model_outputs_and_tuples():
    t, h = torch.randn(3, 4), torch.randn(3, 5, 2)
    assert logits_of(t) is t
    assert logits_of({"hidden": h, "logits": t}) is t
    assert logits_of(FakeModelOutput(loss=None, logits=t)) is t
    assert logits_of({"scores": t, "hidden": h}) is t  # no 'logits' key: the first tensor
    assert logits_of((t, h)) is t and logits_of([None, t]) is t
    for bad in (None, {"loss": None}, (None,), "logits"):
        with pytest.raises(ConfigError, match="holding no tensor"):
            logits_of(bad)


def test_token_ids_stay_integers():
    data = dataset_from_splits(load())
    assert data.x["train"].dtype == torch.int64 and int(data.x["train"].max()) < VOCAB
    splits = load()
    splits["train"] = (splits["train"][0].bool(), splits["train"][1])
    with pytest.raises(ConfigError, match="integers such as token ids; got torch.bool"):
        dataset_from_splits(splits)


@pytest.mark.slow
def test_token_model_trains_transfers_and_evaluates_through_the_adapter(tmp_path, capsys):
    src, src_tuple = str(tmp_path / "src"), str(tmp_path / "src-tuple")
    # Training: the model returns {"hidden", "logits"}; the other one (logits, hidden).
    assert main(["train", "--model", "token_models:make_net", *TRAIN, "--seed", "1", "--out", src]) == 0
    assert main(["train", "--model", "token_models:make_net", "--model-arg", "output=tuple", *TRAIN,
                 "--seed", "1", "--out", src_tuple]) == 0
    a, b = (json.loads((tmp_path / d / "trajectory.json").read_text()) for d in ("src", "src-tuple"))
    assert a["meta"]["val_acc"] == b["meta"]["val_acc"]  # same weights, same logits, whatever the wrapper
    assert a["meta"]["val_acc"][-1] > 50  # learned (chance is about 33%)
    # Transfer: Naive needs no spec; the gradients of FGMT go through the adapter too.
    for method in ("naive", "fgmt"):
        assert main(["transfer", "--source", src, "--target-seed", "2", "--method", method, "--steps", "3",
                     "--out", str(tmp_path / method), "--quiet", "--force", "--min-coverage", "0"]) == 0
    # Evaluation of the transfer's best model and of the store's last step.
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "fgmt")]) == 0 and "test accuracy" in capsys.readouterr().out
    assert main(["eval", src]) == 0 and f"{a['meta']['test_acc']:.2f}%" in capsys.readouterr().out


def test_recorded_token_model_transfers_from_python(tmp_path):
    # The user's own loop, recorded; its model returns a dict and reads int64 tokens.
    torch.manual_seed(1)
    model, data = make_net(), load()
    x, y = data["train"]
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    rec = raytraj.TrajectoryRecorder(str(tmp_path / "rec"), model, model_factory="token_models:make_net",
                                     data="token_models:load", seed=1)
    for _ in range(2):
        for idx in torch.randperm(len(y)).split(32):
            loss = F.cross_entropy(raytraj.logits_of(model(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.record(model)
    rec.close()
    torch.manual_seed(2)
    result = raytraj.transfer_model(source=str(tmp_path / "rec"), target=make_net(), data=load(),
                                    config=raytraj.TransferConfig(method="naive", steps=2))
    assert 0 <= result.metrics["test_acc"] <= 100 and result.perm == {}
    out = result.model(x[:4])
    assert set(out) == {"hidden", "logits"} and out["logits"].shape == (4, 4)
