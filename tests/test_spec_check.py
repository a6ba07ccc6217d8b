"""check_spec proves only the spec: dropout of every kind and float32 rounding must not fail an innocent model,
and a failure says whether the spec or the check's conditions are at fault."""

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from raytraj.perm import PermutationSpec, SpecCheckError, check_spec, infer_spec


class DropoutEverywhere(nn.Module):
    """Dropout as a module, inside nn.MultiheadAttention, functional under `training`, and as sdpa's dropout_p."""

    def __init__(self, width=8, p=0.5):
        super().__init__()
        self.p = p
        self.inp = nn.Linear(3, width)
        self.attn = nn.MultiheadAttention(width, 2, dropout=p, batch_first=True)
        self.drop = nn.Dropout(p)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        h = self.drop(self.inp(x))
        h = h + self.attn(h, h, h)[0]  # need_weights=True: MHA's own F.dropout on the weights
        h = h + self.attn(h, h, h, need_weights=False)[0]  # the sdpa path: dropout_p
        q = h.unsqueeze(1)
        h = h + F.scaled_dot_product_attention(q, q, q, dropout_p=self.p if self.training else 0.0).squeeze(1)
        h = F.dropout(h, self.p, training=self.training)  # HF eager attention's way
        return self.head(h.mean(1))


def stream_spec(model, stream="stream"):
    axes = {k: (None,) * v.dim() for k, v in model.state_dict().items()}
    axes.update({"inp.weight": (stream, None), "inp.bias": (stream,), "attn.in_proj_weight": (None, stream),
                 "attn.out_proj.weight": (stream, None), "attn.out_proj.bias": (stream,),
                 "head.weight": (None, stream)})
    return PermutationSpec.from_axes(axes, model.state_dict())


def test_dropout_of_every_kind_passes_and_a_wrong_spec_still_fails_blaming_the_spec():
    torch.manual_seed(0)
    model = DropoutEverywhere().train()
    x = torch.randn(4, 5, 3)
    check_spec(model, stream_spec(model), x)
    assert model.training and model.drop.training  # the caller's model is left as it was
    axes = dict(stream_spec(model).axes)
    axes["head.weight"] = (None, None)  # the head no longer reads the stream in its permuted order
    with pytest.raises(SpecCheckError, match="spec is at fault"):
        check_spec(model, PermutationSpec.from_axes(axes, model.state_dict()), x)


def test_stock_transformer_encoder_with_dropout_passes_an_identity_spec():
    """Issue 18: the stock layer (dropout 0.1) was refused even with a spec that permutes nothing."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True), 2,
                                enable_nested_tensor=False)
    spec = PermutationSpec.from_axes({k: (None,) * v.dim() for k, v in enc.state_dict().items()}, enc.state_dict())
    check_spec(enc, spec, torch.randn(3, 4, 8))


class TinyBatchNet(nn.Module):
    """Train-mode BatchNorm at 1x1 over 8 samples: batch statistics magnify rounding."""

    def __init__(self, c=32):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 2)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.bn2 = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        h = self.bn2(self.conv2(torch.relu(self.bn(self.conv(x)))))
        return self.head(torch.relu(h).flatten(1))


def tiny_batch_spec(model):
    s = model.state_dict()
    axes = {k: (None,) * v.dim() for k, v in s.items()}
    for layer, group in (("conv", "a"), ("conv2", "b")):
        axes[f"{layer}.weight"] = (group, "a" if layer == "conv2" else None, None, None)
        axes[f"{layer}.bias"] = (group,)
    for bn, group in (("bn", "a"), ("bn2", "b")):
        for t in ("weight", "bias", "running_mean", "running_var"):
            axes[f"{bn}.{t}"] = (group,)
    axes["head.weight"] = (None, "b")
    return PermutationSpec.from_axes(axes, s)


def test_batchnorm_rounding_is_not_a_false_alarm_and_batch_statistics_stay_covered():
    torch.manual_seed(0)
    model = TinyBatchNet(64)
    with torch.no_grad():  # conv2's outputs barely vary over the batch, so bn2 divides by a tiny batch std
        model.conv2.weight.mul_(1e-3)
        model.conv2.bias.fill_(1.0)
    x = torch.randn(8, 3, 2, 2)
    spec = tiny_batch_spec(model)
    check_spec(model, spec, x)  # in float32 the permuted sums' rounding, so magnified, was refused at bn2
    axes = dict(spec.axes)
    axes["bn2.running_var"] = (None,)  # only train mode's running-stat update can see this
    with pytest.raises(SpecCheckError, match="bn2"):
        check_spec(model, PermutationSpec.from_axes(axes, model.state_dict()), x)


_calls = itertools.count(1)


class Restless(nn.Module):
    """Not deterministic: each call adds a different constant, whatever the RNG."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x))) + next(_calls)


def test_a_nondeterministic_model_blames_the_conditions_not_the_spec():
    model = Restless()
    s = model.state_dict()
    spec = PermutationSpec.from_axes({"fc.weight": ("h", None), "fc.bias": ("h",), "head.weight": (None, "h"),
                                      "head.bias": (None,)}, s)
    with pytest.raises(SpecCheckError, match="conditions are at fault"):
        check_spec(model, spec, torch.randn(4, 3))


class TokenModel(nn.Module):
    """Token ids by keyword, a dict out: the answer is its logits."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(7, 6)
        self.head = nn.Linear(6, 7)

    def forward(self, input_ids):
        return {"hidden": self.wte(input_ids), "logits": self.head(torch.tanh(self.wte(input_ids)))}


def test_integer_keyword_inputs_and_dict_outputs():
    model = TokenModel()
    s = model.state_dict()
    spec = PermutationSpec.from_axes({"wte.weight": (None, "d"), "head.weight": (None, "d"), "head.bias": (None,)}, s)
    ids = torch.randint(0, 7, (2, 5))
    check_spec(model, spec, {"input_ids": ids})  # "hidden" is permuted by design; only the logits are the answer
    bad = PermutationSpec.from_axes({"wte.weight": (None, "d"), "head.weight": (None, None), "head.bias": (None,)}, s)
    with pytest.raises(SpecCheckError):
        check_spec(model, bad, {"input_ids": ids})


class Float32Inside(nn.Module):
    """Makes a float32 tensor of its own, so it cannot run in float64: the proof runs in float32."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x)) @ torch.arange(16.0).view(4, 4))  # float64 @ float32 fails


def test_a_model_that_cannot_run_in_float64_is_proved_in_its_own_dtype():
    model = Float32Inside()
    s = model.state_dict()
    spec = PermutationSpec.from_axes({"fc.weight": ("h", None), "fc.bias": ("h",), "head.weight": (None, "h"),
                                      "head.bias": (None,)}, s)
    x = torch.randn(4, 3)
    with pytest.raises(SpecCheckError, match="model.s own dtype"):  # the fixed matrix does not move with h
        check_spec(model, spec, x)


class Versioned(nn.Module):
    """Reads its saved version on loading, as torchvision's MNASNet does."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") != 2:
            raise ValueError(f"version should be 2 instead of {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_check_spec_keeps_the_state_dict_versions_that_modules_read():
    model = Versioned()
    x = torch.randn(5, 3)
    spec = infer_spec(model, x)
    assert spec.axes["a.weight"][0] is not None
    check_spec(model, spec, x)
