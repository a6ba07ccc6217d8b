"""Inference on stock PyTorch code: each rule is checked with a planted permutation.

For every model: infer the spec, prove it, permute the model's weights with a random permutation
the spec allows (outputs must not change), and recover that permutation by weight matching.
"""

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from raytraj.perm import (
    PermutationSpec,
    SpecInferenceError,
    SpecInferenceWarning,
    apply_permutation,
    check_spec,
    infer_spec,
    match,
    random_permutation,
)
from raytraj.perm.example import call_args, primary_output


def infer_quietly(model, x) -> PermutationSpec:
    """The spec, failing the test on any note: these models are meant to be fully understood."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecInferenceWarning)
        return infer_spec(model, x)


def planted(model, x, spec, seed=0):
    """Permute ``model`` by a random permutation (no group left in place), check outputs, recover it."""
    model.eval()
    check_spec(model, spec, x)
    gen = torch.Generator().manual_seed(seed)
    perm = random_permutation(spec, gen)
    for _ in range(20):  # small groups (2 heads) stay put by chance: draw again
        if not any(len(p) > 1 and torch.equal(p, torch.arange(len(p))) for p in perm.values()):
            break
        perm = random_permutation(spec, gen)
    state = model.state_dict()
    moved = copy.deepcopy(model)
    moved.load_state_dict(apply_permutation(spec, perm, state))
    args, kwargs = call_args(x)
    with torch.no_grad():
        torch.testing.assert_close(primary_output(moved(*args, **kwargs)), primary_output(model(*args, **kwargs)),
                                   rtol=1e-4, atol=1e-5)
    got, _ = match(spec, [(moved.state_dict(), state)], seed=0)
    assert all(torch.equal(got[g], perm[g]) for g in spec.sizes), "matching did not recover the planted permutation"
    return perm


# -- nn.TransformerEncoder / Decoder -----------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, batch_first=True, norm_first=False, width=8, heads=2):
        super().__init__()
        self.batch_first = batch_first
        self.inp = nn.Linear(3, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.1, batch_first=batch_first,
                                           norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 2)

    def forward(self, x):  # (B, T, 3), or (T, B, 3) when not batch_first
        return self.head(self.enc(self.inp(x)).mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first,norm_first", [(True, False), (False, True)])
def test_transformer_encoder_heads_mlp_and_stream(batch_first, norm_first):
    torch.manual_seed(0)
    model = Encoder(batch_first, norm_first)
    x = torch.randn(4, 5, 3) if batch_first else torch.randn(5, 4, 3)
    spec = infer_quietly(model, x)
    a = spec.axes
    stream = a["inp.weight"][0]
    assert stream is not None and a["head.weight"] == (None, stream)
    for i in range(2):
        p = f"enc.layers.{i}."
        heads, dims = a[p + "self_attn.out_proj.weight"][1]
        assert spec.sizes[heads] == 2 and spec.sizes[dims] == 4
        assert a[p + "self_attn.in_proj_weight"] == ((None, heads, dims), stream)
        hidden = a[p + "linear1.weight"][0]
        assert spec.sizes[hidden] == 16 and a[p + "linear2.weight"] == (stream, hidden)
        assert a[p + "norm1.weight"] == a[p + "norm2.bias"] == (stream,)
    planted(model, x, spec)


class Seq2Seq(nn.Module):
    """nn.TransformerDecoder: self-attention, and cross-attention whose in_proj splits into q and (k, v)."""

    def __init__(self, width=8, heads=2):
        super().__init__()
        self.src = nn.Linear(3, width)
        self.tgt = nn.Linear(3, width)
        self.dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(width, heads, 2 * width, dropout=0.1,
                                                                    batch_first=True), 1)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.dec(self.tgt(x), self.src(x)).mean(1))


def test_transformer_decoder_cross_attention():
    torch.manual_seed(0)
    model = Seq2Seq()
    x = torch.randn(4, 5, 3)
    spec = infer_quietly(model, x)
    a = spec.axes
    stream = a["tgt.weight"][0]
    assert a["src.weight"][0] == stream  # memory meets the stream through k and v's shared in_proj
    heads, dims = a["dec.layers.0.multihead_attn.out_proj.weight"][1]
    assert a["dec.layers.0.multihead_attn.in_proj_weight"] == ((None, heads, dims), stream)
    assert spec.sizes[heads] == 2
    planted(model, x, spec)


# -- fused qkv, written like timm ----------------------------------------------------------------------
class ViTBlock(nn.Module):
    """timm's Attention: qkv Linear -> reshape(B, N, 3, H, D) -> permute -> unbind; F.layer_norm in the MLP."""

    def __init__(self, width=12, heads=3, split="unbind", sdpa=True):
        super().__init__()
        self.heads, self.split, self.sdpa = heads, split, sdpa
        self.patch = nn.Linear(4, width)
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln_w = nn.Parameter(torch.randn(width))
        self.ln_b = nn.Parameter(torch.randn(width))
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.patch(x)
        B, N, C = x.shape
        h = self.norm1(x)
        if self.split == "unbind":
            q, k, v = self.qkv(h).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        else:  # chunk, then heads
            q, k, v = (t.view(B, N, self.heads, -1).transpose(1, 2) for t in self.qkv(h).chunk(3, dim=-1))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = (q @ k.transpose(-2, -1) * (C // self.heads) ** -0.5).softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(B, N, C))
        x = x + self.fc2(F.gelu(self.fc1(F.layer_norm(x, (C,), self.ln_w, self.ln_b))))
        return self.head(x[:, 0])


@pytest.mark.parametrize("split,sdpa", [("unbind", True), ("chunk", False)])
def test_fused_qkv_with_five_dim_reshape_or_chunk(split, sdpa):
    torch.manual_seed(0)
    model = ViTBlock(split=split, sdpa=sdpa)
    x = torch.randn(4, 5, 4)
    spec = infer_quietly(model, x)
    a = spec.axes
    stream = a["patch.weight"][0]
    heads, dims = a["proj.weight"][1]
    assert spec.sizes[heads] == 3 and spec.sizes[dims] == 4
    assert a["qkv.weight"] == ((None, heads, dims), stream) and a["qkv.bias"] == ((None, heads, dims),)
    assert a["ln_w"] == a["ln_b"] == a["norm1.weight"] == (stream,)  # F.layer_norm as LayerNorm
    planted(model, x, spec)


# -- GroupNorm, RMSNorm, BatchNorm, flatten ---------------------------------------------------------
class GroupNormNet(nn.Module):
    """A GroupNorm CNN with a residual: channels move in whole groups, and within each group alike."""

    def __init__(self, c=8, groups=4):
        super().__init__()
        self.inp = nn.Conv2d(3, c, 3, padding=1)
        self.gn1 = nn.GroupNorm(groups, c)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.gn_w = nn.Parameter(torch.rand(c) + 0.5)
        self.gn_b = nn.Parameter(torch.randn(c))
        self.groups = groups
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        h = F.silu(self.gn1(self.inp(x)))
        h = h + F.group_norm(self.conv(h), self.groups, self.gn_w, self.gn_b)  # the functional form
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_groupnorm_is_block_structured():
    torch.manual_seed(0)
    model = GroupNormNet()
    x = torch.randn(4, 3, 5, 5)
    spec = infer_quietly(model, x)
    a = spec.axes
    blocks, within = a["inp.weight"][0]
    assert spec.sizes[blocks] == 4 and spec.sizes[within] == 2
    assert a["gn1.weight"] == a["gn_w"] == a["conv.bias"] == ((blocks, within),)  # the residual shares them
    assert a["conv.weight"][:2] == ((blocks, within), (blocks, within))
    assert a["head.weight"] == (None, (blocks, within))
    planted(model, x, spec)


class NormsNet(nn.Module):
    """RMSNorm, BatchNorm and a flatten after a conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 2 * 2, 6)
        self.rms = nn.RMSNorm(6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)  # (B, 4, 2, 2)
        return self.out(F.silu(self.rms(self.fc(h.flatten(1)))))


def test_rmsnorm_batchnorm_and_flatten_after_conv():
    torch.manual_seed(0)
    model = NormsNet()
    with torch.no_grad():
        model.bn.running_mean.normal_()
    x = torch.randn(5, 2, 6, 6)
    spec = infer_quietly(model, x)
    a = spec.axes
    ch, hidden = a["conv.weight"][0], a["fc.weight"][0]
    assert a["bn.running_mean"] == a["bn.weight"] == (ch,)
    assert a["fc.weight"] == (hidden, (ch, None))  # 4 channels x 4 fixed positions
    assert a["rms.weight"] == (hidden,) and a["out.weight"] == (None, hidden)
    planted(model, x, spec)


# -- token ids, embeddings, tied weights, dict answers -----------------------------------------------
class TiedLM(nn.Module):
    """Token ids in, the input embedding reused as the output layer, a ModelOutput-like dict out."""

    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Parameter(torch.randn(6, width))
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.norm = nn.RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids, attention_mask=None):
        h = self.wte(input_ids) + self.wpe[: input_ids.shape[1]]
        h = h + self.down(F.gelu(self.up(h)))
        logits = self.lm_head(self.norm(h))
        if attention_mask is not None:
            logits = logits * attention_mask[..., None]
        return {"logits": logits, "hidden_states": (h,)}


def test_embedding_tied_weights_token_ids_and_dict_output():
    torch.manual_seed(0)
    model = TiedLM()
    ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))
    x = {"input_ids": ids, "attention_mask": torch.ones(3, 6, dtype=torch.long)}
    spec = infer_quietly(model, x)
    a = spec.axes
    stream = a["wte.weight"][1]
    assert stream is not None and a["wte.weight"] == a["lm_head.weight"] == (None, stream)  # one tensor, one entry
    assert a["wpe"] == (None, stream) and a["norm.weight"] == (stream,)
    planted(model, x, spec)


# -- failures are one error with advice -----------------------------------------------------------------
class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.view(-1, 5))


class NoTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return "done"


def test_failures_inside_inference_are_one_error_with_advice():
    with pytest.raises(SpecInferenceError, match="failed on the example input"):
        infer_spec(Broken(), torch.randn(4, 3))
    with pytest.raises(SpecInferenceError, match="no tensor"):
        infer_spec(NoTensor(), torch.randn(4, 3))
