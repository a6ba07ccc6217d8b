"""Spec inference and checking: zoo models, models outside the zoo, and bad input."""

import warnings

import pytest
import torch
import torch.nn as nn

from raytraj.models import build_model, config_for_data
from raytraj.perm import (
    PermutationSpec,
    SpecCheckError,
    SpecError,
    SpecInferenceWarning,
    apply_permutation,
    check_spec,
    infer_spec,
    random_permutation,
)

ZOO = {
    "mlp": ((1, 8, 8), {"hidden": (32, 24, 16)}),
    "conv": ((3, 32, 32), {"width": 0.125}),
    "conv_small_input_bn": ((1, 8, 8), {"width": 0.125, "batch_norm": True}),
    "resnet20": ((3, 16, 16), {"width": 0.5}),
    "conv1d": ((1, 40), {"batch_norm": True}),
}


def zoo_model(key):
    shape, overrides = ZOO[key]
    name = key.split("_")[0]
    model = build_model(config_for_data(name, shape, 10, **overrides), seed=0)
    return model, torch.randn(6, *shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", sorted(ZOO))
def test_zoo_specs_pass_check(key):
    model, x = zoo_model(key)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecInferenceWarning)  # zoo models must be fully understood
        spec = infer_spec(model, x)
    assert spec.unpermuted == ()
    check_spec(model, spec, x)
    # the input and class axes are never permuted
    first = next(k for k in spec.axes if k.endswith("weight"))
    assert spec.axes[first][1] is None
    assert spec.axes["head.weight"][0] is None and spec.axes["head.bias"] == (None,)


def test_mlp_has_one_group_per_hidden_layer():
    model, x = zoo_model("mlp")
    spec = infer_spec(model, x)
    assert sorted(spec.sizes.values()) == [16, 24, 32]
    assert spec.axes["layers.1.weight"] == (spec.axes["layers.1.bias"][0], spec.axes["layers.0.bias"][0])


def test_resnet20_groups_are_one_stream_per_stage_plus_one_per_block():
    model, x = zoo_model("resnet20")
    spec = infer_spec(model, x)
    assert len(spec.sizes) == 3 + 9
    inner = {spec.axes[f"stages.{s}.{b}.conv1.weight"][0] for s in range(3) for b in range(3)}
    assert len(inner) == 9
    for s in range(3):
        stream = {spec.axes[f"stages.{s}.{b}.conv2.weight"][0] for b in range(3)}
        assert len(stream) == 1, "every block of a stage writes into one shared residual stream"
        (g,) = stream
        assert g not in inner
        # each block's first conv reads the stream, and BN running stats move with it
        assert all(spec.axes[f"stages.{s}.{b}.conv1.weight"][1] == g for b in range(1, 3))
        assert spec.axes[f"stages.{s}.0.bn2.running_mean"] == (g,)
    assert spec.axes["stem.0.weight"][0] == spec.axes["stages.0.0.conv2.weight"][0]
    assert spec.axes["stages.1.0.shortcut.0.weight"][:2] == (
        spec.axes["stages.1.0.conv2.weight"][0], spec.axes["stem.0.weight"][0])
    assert spec.axes["stages.0.0.bn1.num_batches_tracked"] == ()


class ResidualBNNet(nn.Module):
    """Not in the zoo: a residual add around two BatchNorm'd convs, a shared-weight layer, 1x1 pool."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(2, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(6)
        self.b = nn.Conv2d(6, 8, 1)
        self.shared = nn.Conv2d(8, 8, 1)  # applied twice: both calls share one group
        self.fc = nn.Linear(8, 5)
        self.ln = nn.LayerNorm(5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.inp(x)))
        h = h + self.b(torch.relu(self.bn_a(self.a(h))))
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        h = torch.nn.functional.adaptive_avg_pool2d(h, 1).view(h.size(0), -1)
        return self.out(torch.relu(self.ln(self.fc(h))))


class ConcatFlattenNet(nn.Module):
    """Not in the zoo: channel concat, a spatial flatten, a batch-dim cat, and an op with no rule."""

    def __init__(self):
        super().__init__()
        self.left = nn.Conv1d(1, 4, 3, padding=1)
        self.right = nn.Conv1d(1, 5, 3, padding=1)
        self.mix = nn.Conv1d(9, 6, 3, padding=1)
        self.flip_in = nn.Linear(6 * 8, 7)
        self.flip_out = nn.Linear(7, 7)
        self.head = nn.Linear(7, 2)

    def forward(self, x):
        h = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        h = torch.relu(self.mix(h)).flatten(1)  # 6 channels x 8 positions
        h = torch.relu(self.flip_in(h))
        h = torch.relu(self.flip_out(h.flip(1)))  # reverses units: no group may span it
        h = torch.cat([h, h], dim=0)[: x.shape[0]]
        return self.head(h)


def test_model_with_residual_and_batchnorm_outside_zoo():
    model = ResidualBNNet()
    x = torch.randn(5, 2, 6, 6)
    spec = infer_spec(model, x)
    check_spec(model, spec, x)
    stream = spec.axes["inp.weight"][0]
    assert spec.axes["b.weight"][0] == stream == spec.axes["shared.weight"][0] == spec.axes["shared.weight"][1]
    assert spec.axes["bn0.running_var"] == (stream,)
    assert spec.axes["ln.weight"] == (spec.axes["fc.weight"][0],)
    assert spec.unpermuted == ()


def test_unknown_ops_leave_axes_unpermuted_and_are_reported():
    model = ConcatFlattenNet()
    x = torch.randn(4, 1, 8)
    with pytest.warns(SpecInferenceWarning):
        spec = infer_spec(model, x)
    check_spec(model, spec, x)
    notes = " | ".join(spec.unpermuted)
    assert "concatenation" in notes and "flip" in notes
    # the concatenated channels, and both sides of the flip, stay put
    assert spec.axes["left.weight"][0] is None and spec.axes["right.weight"][0] is None
    assert spec.axes["mix.weight"][1:] == (None, None)
    assert spec.axes["flip_in.weight"][0] is None and spec.axes["flip_out.weight"][1] is None
    # flatten after a conv: the Linear reads (6 channels, 8 fixed positions), so the channels move
    mix = spec.axes["mix.weight"][0]
    assert mix is not None and spec.axes["flip_in.weight"][1] == (mix, None)
    # what no unknown op touches is still permuted, across the batch-dim cat
    assert spec.axes["flip_out.weight"][0] is not None
    assert spec.axes["head.weight"][1] == spec.axes["flip_out.weight"][0]


def test_check_spec_names_the_first_broken_tensor():
    model, x = zoo_model("resnet20")
    spec = infer_spec(model, x)
    axes = dict(spec.axes)
    axes["stages.1.0.conv2.weight"] = (axes["stages.1.0.conv2.weight"][0], None, None, None)
    with pytest.raises(SpecCheckError, match=r"stages\.1\.0\.conv2\.weight"):
        check_spec(model, PermutationSpec(axes, spec.shapes), x)


def test_check_spec_catches_an_unpermuted_buffer():
    model, x = zoo_model("conv_small_input_bn")
    spec = infer_spec(model, x)
    axes = dict(spec.axes)
    axes["features.1.running_mean"] = (None,)
    with pytest.raises(SpecCheckError, match="features.1"):
        check_spec(model, PermutationSpec(axes, spec.shapes), x)


def test_spec_round_trips_and_rejects_inconsistent_groups():
    model, x = zoo_model("mlp")
    spec = infer_spec(model, x)
    assert PermutationSpec.from_dict(spec.to_dict()) == spec
    axes = dict(spec.axes)
    axes["layers.1.weight"] = (axes["layers.1.weight"][0], axes["layers.1.weight"][0])  # 24 vs 32
    with pytest.raises(SpecError, match="size"):
        PermutationSpec(axes, spec.shapes)
    with pytest.raises(SpecError, match="axes"):
        PermutationSpec({"w": ("a",)}, {"w": (3, 4)})
    with pytest.raises(SpecError, match="unknown keys"):
        PermutationSpec.from_dict({**spec.to_dict(), "extra": 1})


def test_state_dicts_that_do_not_fit_the_spec_raise():
    model, x = zoo_model("mlp")
    spec = infer_spec(model, x)
    perm = random_permutation(spec, torch.Generator().manual_seed(0))
    other = build_model(config_for_data("mlp", (1, 8, 8), 10, hidden=(32, 20, 16)), seed=0)
    with pytest.raises(SpecError, match=r"layers\.1\.weight has shape"):
        apply_permutation(spec, perm, other.state_dict())
    with pytest.raises(SpecError, match="does not know"):
        apply_permutation(spec, perm, {"conv.weight": torch.zeros(3)})
    with pytest.raises(SpecError, match="lack tensors"):
        check_spec(build_model(config_for_data("mlp", (1, 8, 8), 10, hidden=(32, 24, 16), bias=False), 0), spec, x)
    with pytest.raises(SpecError, match="not a permutation"):
        apply_permutation(spec, {**perm, next(iter(perm)): torch.zeros(32, dtype=torch.long)}, model.state_dict())
    with pytest.raises(SpecError, match="groups"):
        apply_permutation(spec, {}, model.state_dict())


def test_apply_permutation_returns_new_tensors_and_keeps_function():
    model, x = zoo_model("conv1d")
    spec = infer_spec(model, x)
    state = model.state_dict()
    perm = random_permutation(spec, torch.Generator().manual_seed(3))
    permuted = apply_permutation(spec, perm, state)
    assert set(permuted) == set(state)
    assert not torch.equal(permuted["features.0.weight"], state["features.0.weight"])
    clone = build_model(config_for_data("conv1d", (1, 40), 10, batch_norm=True), seed=5)
    clone.load_state_dict(permuted)
    model.eval(), clone.eval()
    torch.testing.assert_close(clone(x), model(x), rtol=1e-4, atol=1e-5)
