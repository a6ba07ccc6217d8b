"""Permutation specs through attention: segmented axes, inference on transformers, planted recovery."""

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from raytraj.models import build_model, config_for_data
from raytraj.perm import (
    PairBank,
    PermutationSpec,
    SpecCheckError,
    SpecError,
    SpecInferenceWarning,
    apply_permutation,
    check_spec,
    compose_permutations,
    infer_spec,
    invert_permutation,
    match,
    random_permutation,
)
from raytraj.perm.apply import permute_tensor

H, D = 3, 4  # heads, head_dim in the hand-written specs


# -- segmented axes ------------------------------------------------------------------------------
def test_segmented_axis_moves_whole_blocks_and_shares_the_within_block_permutation():
    w = torch.arange(H * D * 2, dtype=torch.float32).reshape(H * D, 2)
    spec = PermutationSpec.from_axes({"w": (("heads", "dims"), None)}, {"w": w}, group_sizes={"heads": H})
    assert spec.sizes == {"heads": H, "dims": D}
    perm = {"heads": torch.tensor([2, 0, 1]), "dims": torch.tensor([1, 3, 0, 2])}
    out = apply_permutation(spec, perm, {"w": w})["w"]
    blocks = w.reshape(H, D, 2)
    expected = blocks[perm["heads"]][:, perm["dims"]].reshape(H * D, 2)
    assert torch.equal(out, expected)
    # the per-group inverse undoes it, and composition is per group
    back = apply_permutation(spec, invert_permutation(perm), {"w": out})["w"]
    assert torch.equal(back, w)
    twice = apply_permutation(spec, compose_permutations(perm, perm), {"w": w})["w"]
    assert torch.equal(twice, apply_permutation(spec, perm, {"w": out})["w"])


def test_segmented_spec_round_trips_and_rejects_what_does_not_fit():
    t = {"q": torch.zeros(H * D, 5), "o": torch.zeros(5, H * D), "b": torch.zeros(D)}
    spec = PermutationSpec.from_axes(
        {"q": (("heads", "dims"), "res"), "o": ("res", ("heads", "dims")), "b": ("dims",)}, t)
    assert spec.sizes == {"heads": H, "dims": D, "res": 5}  # heads read off the block count
    assert spec.conflicts()["heads"] == {"dims", "res"}
    assert PermutationSpec.from_dict(spec.to_dict()) == spec
    assert spec.unsegmented().shapes["q"] == (H, D, 5)
    # a fixed part: whole heads move, the dims inside stay (what RoPE allows)
    rope = PermutationSpec.from_axes({"q": (("heads", None), None)}, t, group_sizes={"heads": H})
    assert PermutationSpec.from_dict(rope.to_dict()) == rope and rope.unsegmented().shapes["q"] == (H, D, 5)
    moved = apply_permutation(rope, {"heads": torch.tensor([1, 2, 0])}, {"q": torch.arange(H * D * 5.0).view(-1, 5)})
    assert torch.equal(moved["q"], torch.arange(H * D * 5.0).view(H, D, 5)[[1, 2, 0]].reshape(-1, 5))
    with pytest.raises(SpecError, match="group_sizes"):
        PermutationSpec.from_axes({"q": (("heads", "dims"), None)}, t)
    with pytest.raises(SpecError, match="divide"):
        PermutationSpec.from_axes({"q": (("heads", "dims"), None)}, t, group_sizes={"heads": 5})
    with pytest.raises(SpecError, match="different groups"):
        PermutationSpec.from_axes({"q": (("heads", "heads"), None)}, t, group_sizes={"heads": 2})
    with pytest.raises(SpecError, match="axis entry"):
        PermutationSpec.from_axes({"q": (("heads", 3), None)}, t)
    with pytest.raises(SpecError, match="one None part"):
        PermutationSpec.from_axes({"q": ((None, "heads", None), None)}, t, group_sizes={"heads": H})


def brute_force_cost(spec, pairs, perm, group):
    """A_group from the definition: the gain of every unit swap, by permuting the source outright."""
    n = spec.sizes[group]
    a = torch.zeros(n, n, dtype=torch.float64)
    for j in range(n):
        for i in range(n):
            p = dict(perm)
            p[group] = perm[group].clone()
            p[group][i] = j
            for t, s in pairs:
                for name, axis in spec.groups[group]:
                    # only units i of this group: the share of row i under the candidate j
                    mask = torch.zeros(n)
                    mask[i] = 1
                    entry = spec.axes[name][axis]
                    sel = {**{g: torch.ones(m) for g, m in spec.sizes.items()}, group: mask}
                    weight = _axis_weight(entry, sel)
                    src = _permute_loose(s[name], spec.axes[name], p)
                    shape = [1] * src.dim()
                    shape[axis] = -1
                    a[i, j] += float((t[name].double() * src.double() * weight.reshape(shape)).sum())
    return a


def _axis_weight(entry, sel):
    if isinstance(entry, tuple):
        return (sel[entry[0]][:, None] * sel[entry[1]][None, :]).reshape(-1)
    return sel[entry]


def _permute_loose(t, axes, perm):
    """permute_tensor for index vectors that need not be permutations (a row pointed elsewhere)."""
    for axis, group in enumerate(axes):
        if group is None:
            continue
        if isinstance(group, tuple):
            outer, inner = perm[group[0]], perm[group[1]]
            index = (outer[:, None] * len(inner) + inner[None, :]).reshape(-1)
        else:
            index = perm[group]
        t = t.index_select(axis, index)
    return t


def test_head_and_within_head_costs_sum_over_blocks():
    """PairBank's cost of a head group and of a within-head group, against the definition."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"q": (H * D, 5), "k": (H * D, 5), "o": (5, H * D), "b": (H * D,)}
    axes = {"q": (("heads", "dims"), "res"), "k": (("heads", "dims"), "res"), "o": ("res", ("heads", "dims")),
            "b": (("heads", "dims"),)}
    spec = PermutationSpec(axes, shapes, group_sizes={"heads": H})
    pairs = [({k: torch.randn(s, generator=gen) for k, s in shapes.items()},
              {k: torch.randn(s, generator=gen) for k, s in shapes.items()}) for _ in range(2)]
    bank = PairBank(spec, dtype=torch.float64)
    for t, s in pairs:
        bank.add(t, s)
    perm = random_permutation(spec, gen)
    for group in ("heads", "dims", "res"):
        torch.testing.assert_close(bank.cost(group, perm), brute_force_cost(spec, pairs, perm, group))
    objective = sum(float((t[k].double() * permute_tensor(s[k].double(), spec.axes[k], perm)).sum())
                    for t, s in pairs for k in t)
    assert bank.objective(perm) == pytest.approx(objective, rel=1e-9)


def test_nested_segments_move_fixed_blocks_of_heads_of_dims():
    """A fused q/k/v axis, 3 x heads x dims: the three blocks stay, heads and dims move inside each."""
    w = torch.arange(3 * H * D * 2, dtype=torch.float32).reshape(3 * H * D, 2)
    spec = PermutationSpec.from_axes({"w": ((None, "heads", "dims"), None), "o": (("heads", "dims"),)},
                                     {"w": w, "o": torch.zeros(H * D)}, group_sizes={"heads": H})
    assert spec.sizes == {"heads": H, "dims": D} and spec.split_shape("w") == (3, H, D, 2)
    perm = {"heads": torch.tensor([2, 0, 1]), "dims": torch.tensor([1, 3, 0, 2])}
    out = apply_permutation(spec, perm, {"w": w})["w"]
    expected = w.reshape(3, H, D, 2)[:, perm["heads"]][:, :, perm["dims"]].reshape(-1, 2)
    assert torch.equal(out, expected)
    assert PermutationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="divide"):
        PermutationSpec.from_axes({"w": ((None, "heads", "dims"), None), "o": (("heads", "dims"),)},
                                  {"w": w[:-2], "o": torch.zeros(H * D)}, group_sizes={"heads": H})


# -- inference --------------------------------------------------------------------------------------
def zoo_transformer(pool="mean", seed=0, **kw):
    cfg = config_for_data("transformer", (1, 40), 10, width=24, heads=3, pool=pool, **kw)
    return build_model(cfg, seed), torch.randn(6, 1, 40, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_zoo_transformer_spec_has_heads_within_head_dims_mlp_units_and_one_residual_stream(pool):
    model, x = zoo_transformer(pool, depth=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecInferenceWarning)
        spec = infer_spec(model, x)
    assert spec.unpermuted == ()
    check_spec(model, spec, x)
    a = spec.axes
    stream = a["embed.weight"][0]
    assert stream is not None and a["embed.weight"][1] is None  # the patch values are the data's
    assert a["pos"][2] == a["head.weight"][1] == a["ln_f.weight"][0] == stream
    assert a["head.weight"][0] is None and a["head.bias"] == (None,)
    for b in range(2):
        p = f"blocks.{b}."
        for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "attn.proj.bias", "mlp.proj.bias"):
            assert a[p + name] == (stream,), name
        for name in ("attn.q", "attn.k", "attn.v", "mlp.fc"):
            assert a[p + name + ".weight"][1] == stream
        heads, qk = a[p + "attn.q.weight"][0]
        assert a[p + "attn.k.weight"][0] == (heads, qk) == a[p + "attn.q.bias"][0]
        v_heads, vo = a[p + "attn.v.weight"][0]
        assert v_heads == heads and vo != qk
        assert a[p + "attn.proj.weight"] == (stream, (heads, vo))
        assert spec.sizes[heads] == 3 and spec.sizes[qk] == spec.sizes[vo] == 8
        hidden = a[p + "mlp.fc.weight"][0]
        assert a[p + "mlp.proj.weight"] == (stream, hidden) and spec.sizes[hidden] == 48
    assert len({a[f"blocks.{b}.attn.q.weight"][0][0] for b in range(2)}) == 2  # each block its own heads


def test_check_spec_rejects_heads_that_do_not_move_together():
    model, x = zoo_transformer()
    spec = infer_spec(model, x)
    axes = dict(spec.axes)
    heads, qk = axes["blocks.0.attn.q.weight"][0]
    _, vo = axes["blocks.0.attn.v.weight"][0]
    axes["blocks.0.attn.k.weight"] = ((heads, vo), axes["blocks.0.attn.k.weight"][1])  # k must share q's dims
    axes["blocks.0.attn.k.bias"] = ((heads, vo),)
    with pytest.raises(SpecCheckError):
        check_spec(model, PermutationSpec(axes, spec.shapes, group_sizes=spec.group_sizes), x)


class GPTBlock(nn.Module):
    """Hand-written, GPT-style: RMSNorm, causal scaled_dot_product_attention, q/k/v/o, a SiLU MLP."""

    def __init__(self, width=12, heads=3, vocab=11, ctx=7, manual=False):
        super().__init__()
        self.heads, self.manual, self.ctx = heads, manual, ctx
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(ctx, width)
        self.norm1 = nn.RMSNorm(width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width, bias=False) for _ in range(4))
        self.norm2 = nn.RMSNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.norm_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        B, T = idx.size(0), idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        h = self.norm1(x)
        C = h.size(-1)
        q = self.q(h).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = self.k(h).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = self.v(h).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        if self.manual:  # nanoGPT's slow path
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            causal = torch.ones(self.ctx, self.ctx).tril()  # plain ints: fx stores it as a constant
            att = att.masked_fill(causal == 0, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).contiguous().view(B, T, C))
        x = x + self.down(F.silu(self.up(self.norm2(x))))
        return self.lm_head(self.norm_f(x))


@pytest.mark.parametrize("manual", [False, True])
def test_hand_written_gpt_block(manual):
    model = GPTBlock(manual=manual)
    idx = torch.randint(0, 11, (4, 7), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecInferenceWarning)
        spec = infer_spec(model, idx)
    check_spec(model, spec, idx)
    a = spec.axes
    stream = a["wte.weight"][1]
    assert a["wte.weight"][0] is None and a["wpe.weight"] == (None, stream)
    assert a["norm1.weight"] == a["norm2.weight"] == (stream,) == a["norm_f.bias"]
    assert a["lm_head.weight"] == (None, stream)
    heads, qk = a["q.weight"][0]
    assert a["k.weight"] == ((heads, qk), stream)
    assert a["v.weight"][0][0] == heads and a["o.weight"] == (stream, a["v.weight"][0])
    assert spec.sizes[heads] == 3 and spec.sizes[qk] == 4


class RopeBlock(nn.Module):
    """Attention with rotary position embeddings (rotate_half): within-head q/k dims are paired."""

    def __init__(self, width=8, heads=2, ctx=5):
        super().__init__()
        self.heads = heads
        self.inp = nn.Linear(3, width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        d = width // heads
        angle = torch.arange(ctx)[:, None] / 10000 ** (torch.arange(0, d, 2) / d)[None, :]
        self.register_buffer("cos", torch.cat([angle.cos(), angle.cos()], -1), persistent=False)
        self.register_buffer("sin", torch.cat([angle.sin(), angle.sin()], -1), persistent=False)
        self.head = nn.Linear(width, 2)

    def rope(self, x):
        half = x.size(-1) // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * self.cos + rotated * self.sin

    def forward(self, x):
        B, T = x.size(0), x.size(1)
        h = self.inp(x)
        q = self.rope(self.q(h).view(B, T, self.heads, -1).transpose(1, 2))
        k = self.rope(self.k(h).view(B, T, self.heads, -1).transpose(1, 2))
        v = self.v(h).view(B, T, self.heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, -1)
        return self.head((h + self.o(y)).mean(1))


def test_rope_leaves_query_key_dims_unpermuted_and_says_so():
    model = RopeBlock()
    x = torch.randn(4, 5, 3)
    with pytest.warns(SpecInferenceWarning, match="RoPE"):
        spec = infer_spec(model, x)
    check_spec(model, spec, x)
    heads = spec.axes["v.weight"][0][0]
    assert spec.axes["q.weight"][0] == spec.axes["k.weight"][0] == (heads, None)  # heads move, dims stay
    assert any("q.weight" in note for note in spec.unpermuted)
    # what RoPE does not touch is still permuted: v/o heads and dims, and the residual stream
    assert isinstance(spec.axes["v.weight"][0], tuple) and spec.axes["o.weight"][1] == spec.axes["v.weight"][0]
    assert spec.axes["inp.weight"][0] == spec.axes["o.weight"][0] == spec.axes["head.weight"][1] is not None


class TorchMHA(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.inp = nn.Linear(3, width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.attn(h, h, h)[0]
        return self.head(self.ln(h).mean(1))


def test_multihead_attention_module_permutes_its_heads_through_the_fused_in_proj():
    model = TorchMHA()
    x = torch.randn(4, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecInferenceWarning)
        spec = infer_spec(model, x)
    check_spec(model, spec, x)
    stream = spec.axes["inp.weight"][0]
    assert stream is not None
    heads, dims = spec.axes["attn.out_proj.weight"][1]  # out_proj reads (heads, head_dim)
    assert spec.sizes[heads] == 2 and spec.sizes[dims] == 4
    # q, k and v are three fixed blocks of in_proj, each of the same heads x dims
    assert spec.axes["attn.in_proj_weight"] == ((None, heads, dims), stream)
    assert spec.axes["attn.in_proj_bias"] == ((None, heads, dims),)
    assert spec.axes["attn.out_proj.weight"][0] == stream and spec.axes["attn.out_proj.bias"] == (stream,)
    assert spec.axes["ln.weight"] == (stream,) and spec.axes["head.weight"] == (None, stream)


class ChannelMeanNet(nn.Module):
    """Averages away the conv channels with mean(1) on a square map: the rows that remain are positions."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean(1)  # (B, 4, 4): 4 channels averaged, 4 rows x 4 columns remain
        return self.head(h.mean(2))  # (B, 4): one value per row


def test_reduction_reads_its_dim_not_the_shapes():
    """Issue 13: with 4 channels on a 4x4 map, mean(1) keeps the shape (B, 4, ...) but not the channels."""
    model = ChannelMeanNet()
    x = torch.randn(5, 1, 4, 4)
    spec = infer_spec(model, x)
    check_spec(model, spec, x)
    assert spec.axes["head.weight"] == (None, None)  # its inputs are positions, fixed by the data
    assert spec.axes["conv.weight"][0] is not None  # a mean over channels ignores their order


# -- planted recovery -------------------------------------------------------------------------------
def planted(seed):
    model, _ = zoo_transformer(depth=2)
    x = torch.randn(64, 1, 40, generator=torch.Generator().manual_seed(seed))
    spec = infer_spec(model, x[:4])
    gen = torch.Generator().manual_seed(seed)
    perm = random_permutation(spec, gen)
    while any(torch.equal(p, torch.arange(len(p))) for p in perm.values()):  # 3 heads: 1 in 6 stay put
        perm = random_permutation(spec, gen)
    return model, x, spec, perm


def test_planted_recovery_from_weights_is_exact():
    model, _, spec, plant = planted(7)
    theta = model.state_dict()
    theta2 = apply_permutation(spec, plant, theta)
    perm, info = match(spec, [(theta2, theta)], seed=3)
    assert all(torch.equal(perm[g], plant[g]) for g in spec.sizes)
    assert info["objective"] == pytest.approx(sum(float((v ** 2).sum()) for v in theta.values()), rel=1e-5)


def test_planted_recovery_from_gradients_is_exact():
    model, x, spec, plant = planted(11)
    y = torch.arange(len(x)) % 10
    theta = model.state_dict()
    theta2 = apply_permutation(spec, plant, theta)

    def grads(state):
        params = {k: v.clone().requires_grad_(True) for k, v in state.items()}
        loss = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    perm, _ = match(spec, [(grads(theta2), grads(theta))], seed=0)
    assert all(torch.equal(perm[g], plant[g]) for g in spec.sizes)


# -- the zoo model -----------------------------------------------------------------------------------
def test_transformer_trains_on_npz_sequences_and_refuses_a_patch_that_does_not_fit(tmp_path):
    from raytraj.config import ConfigError
    from raytraj.train import train_from_args

    rng = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=rng)
    x = torch.randn(600, 2, 12, generator=rng)
    x[:, 0, :6] += 3.0 * (y[:, None] == 1)  # the class shows in one channel at some places
    x[:, 1, 6:] += 3.0 * (y[:, None] == 2)
    path = tmp_path / "seq.npz"
    import numpy as np

    np.savez(path, x_train=x.numpy(), y_train=y.numpy())
    r = train_from_args("transformer", f"npz:{path}", str(tmp_path / "run"), seed=0, epochs=4, lr=0.05,
                        model_args={"width": 16, "heads": 2, "depth": 1}, progress=False)
    assert r.val_acc[-1] > 70  # chance is 33%
    cfg = config_for_data("transformer", (2, 12), 3)
    assert (cfg.in_channels, cfg.seq_len) == (2, 12)
    with pytest.raises(ConfigError, match="patch=5 must divide"):
        config_for_data("transformer", (2, 12), 3, patch=5)
    with pytest.raises(ConfigError, match="sequence inputs"):
        config_for_data("transformer", (1, 8, 8), 10)
