"""check_spec on models with Dropout: train mode must not compare two different dropout masks."""

import pytest
import torch
import torch.nn as nn

from raytraj.perm import SpecError, check_spec, infer_spec


class DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.bn = nn.BatchNorm1d(32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def test_correct_spec_with_dropout_passes_and_batchnorm_still_checked_in_train_mode():
    torch.manual_seed(0)
    model = DropNet()
    x = torch.randn(16, 12)
    spec = infer_spec(model, x)
    assert spec.axes["fc1.weight"][0] is not None
    check_spec(model, spec, x)  # raised "output changes ... in train mode" before Dropout was turned off
    assert model.drop.training  # the caller's model is left as it was

    # A spec that forgets BatchNorm's running stats must still fail: train mode updates them.
    axes = dict(spec.axes)
    axes["bn.running_mean"] = (None,)
    broken = type(spec)(axes=axes, shapes=spec.shapes)
    with pytest.raises(SpecError, match="bn"):
        check_spec(model, broken, x)
