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


class GQABlock(nn.Module):
    """Grouped-query attention (4 q heads share 2 kv heads) through sdpa's enable_gqa."""

    def __init__(self, width=16, heads=4, kv_heads=2):
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads, width // heads
        self.inp = nn.Linear(3, width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, kv_heads * self.d)
        self.v = nn.Linear(width, kv_heads * self.d)
        self.o = nn.Linear(width, width)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        B, T, _ = x.shape
        h = self.inp(x)
        q = self.q(h).view(B, T, self.h, self.d).transpose(1, 2)
        k = self.k(h).view(B, T, self.kv, self.d).transpose(1, 2)
        v = self.v(h).view(B, T, self.kv, self.d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.head((h + self.o(y.transpose(1, 2).reshape(B, T, -1))).mean(1))


def test_grouped_query_attention_moves_kv_heads_with_their_query_groups():
    torch.manual_seed(0)
    model = GQABlock()
    x = torch.randn(4, 5, 3)
    spec = infer_quietly(model, x)
    a = spec.axes
    kv, dims = a["k.weight"][0]
    assert spec.sizes[kv] == 2 and spec.sizes[dims] == 4
    kv_q, group, dims_q = a["q.weight"][0]
    assert kv_q == kv and dims_q == dims and spec.sizes[group] == 2  # q heads are (kv heads, 2 per group)
    assert a["v.weight"][0][0] == kv and a["o.weight"][1] == (kv, group, a["v.weight"][0][1])  # v and o share dims
    planted(model, x, spec)


class PositionOps(nn.Module):
    """Swin's ops on positions: roll, a relative-position bias table indexed per head, flip and cumsum."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.table = nn.Parameter(torch.randn(9, 2))  # (relative positions, heads)
        self.q = nn.Linear(8, 8)
        self.o = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)
        self.register_buffer("rel", torch.randint(0, 9, (5, 5), generator=torch.Generator().manual_seed(0)),
                             persistent=False)

    def forward(self, x):
        B, T, _ = x.shape
        h = torch.roll(self.inp(x), 1, dims=1)
        q = self.q(h).view(B, T, 2, 4).transpose(1, 2)
        bias = self.table[self.rel.view(-1)].view(T, T, 2).permute(2, 0, 1)
        y = ((q @ q.transpose(-1, -2) + bias).softmax(-1) @ q).transpose(1, 2).reshape(B, T, 8)
        return self.head((h + self.o(y)).flip(1).cumsum(1)[:, -1])


def test_ops_along_positions_keep_channels_and_heads():
    torch.manual_seed(0)
    model = PositionOps()
    x = torch.randn(3, 5, 3)
    with pytest.warns(SpecInferenceWarning, match="indexing picks entries along axis 0"):
        spec = infer_spec(model, x)  # the table's rows (relative positions) stay: the note says so
    heads, dims = spec.axes["q.weight"][0]
    assert spec.axes["table"] == (None, heads) and spec.sizes[heads] == 2
    assert spec.axes["inp.weight"][0] == spec.axes["head.weight"][1] is not None
    planted(model, x, spec)


class ViewWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        h.view_as(h).add_(self.b(x))  # writes b's units into a's through a view: no op on h records it
        return self.head(torch.relu(h))


def test_an_in_place_write_into_a_view_is_not_trusted():
    model = ViewWrite()
    x = torch.randn(5, 3)
    with pytest.warns(SpecInferenceWarning, match="in-place write into a view"):
        spec = infer_spec(model, x)
    check_spec(model, spec, x)
    assert spec.axes["b.weight"] == (None, None)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_hugging_face_models_when_installed(arch):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    if arch == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=8))
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    else:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=8, bos_token_id=0, eos_token_id=0))
        x = ids
    spec = infer_quietly(model, x)
    hidden = [(k, i) for k, a in spec.axes.items() for i, e in enumerate(a) if e is None and spec.shapes[k][i] > 1]
    # only the vocabulary, positions, token types and classes stay
    assert all(k.endswith(("embeddings.weight", "wte.weight", "wpe.weight", "lm_head.weight", "classifier.weight",
                           "classifier.bias")) for k, _ in hidden), hidden
    planted(model, x, spec)


@pytest.mark.parametrize("library", ["timm", "transformers"])
def test_vision_transformers_when_installed(library):
    """timm's VisionTransformer and Hugging Face's ViTForImageClassification as their libraries build them."""
    lib = pytest.importorskip(library)
    torch.manual_seed(0)
    if library == "timm":  # stock code, small config, random weights: nothing downloaded
        model = lib.create_model("vit_tiny_patch16_224", pretrained=False, img_size=8, patch_size=4, embed_dim=16,
                                 depth=1, num_heads=2, mlp_ratio=2.0, num_classes=3)
    else:
        model = lib.ViTForImageClassification(lib.ViTConfig(
            image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, num_labels=3))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    spec = infer_quietly(model, x)
    hidden = {(k, i) for k, a in spec.axes.items() for i, e in enumerate(a)
              if e is None and spec.shapes[k][i] > 1 and not (len(spec.shapes[k]) == 4 and i >= 2)}
    # only the image channels, the token positions (class token included) and the classes stay
    assert hidden == {
        "timm": {("patch_embed.proj.weight", 1), ("pos_embed", 1), ("head.weight", 0), ("head.bias", 0)},
        "transformers": {("vit.embeddings.patch_embeddings.projection.weight", 1),
                         ("vit.embeddings.position_embeddings", 1), ("classifier.weight", 0), ("classifier.bias", 0)},
    }[library]
    planted(model, x, spec)


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class MobileBlock(nn.Module):
    """MobileNet/EfficientNet ops: hardswish, a depthwise conv, squeeze-excite, a residual, a grouped conv."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.expand, self.bn1 = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.se = SqueezeExcite(16)
        self.proj, self.bn3 = nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.hardswish(self.bn0(self.stem(x)))
        y = F.silu(self.bn2(self.dw(F.silu(self.bn1(self.expand(h))))))
        h = h + self.bn3(self.proj(self.se(y)))
        return self.head(self.grouped(h).mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 7x7, channels-last LayerNorm and Linear, layer scale, permute back."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.ln = nn.LayerNorm(8)
        self.fc1, self.fc2 = nn.Linear(8, 32), nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.rand(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.stem(x)
        y = self.fc2(F.gelu(self.fc1(self.ln(self.dw(h).permute(0, 2, 3, 1))))) * self.gamma
        h = h + y.permute(0, 3, 1, 2)
        return self.head(F.layer_norm(h.mean((-2, -1)), (8,)))


@pytest.mark.parametrize("cls", [MobileBlock, ConvNeXtBlock])
def test_cnn_blocks_of_torchvision_and_timm(cls):
    torch.manual_seed(0)
    model = cls()
    x = torch.randn(4, 3, 8, 8)
    spec = infer_quietly(model, x)
    hidden = [(k, i) for k, a in spec.axes.items() for i, e in enumerate(a)
              if e is None and spec.shapes[k][i] > 1 and not (k.endswith(".weight") and i >= 2)]
    assert hidden == [("stem.weight", 1), ("head.weight", 0), ("head.bias", 0)]  # image channels, classes
    if cls is MobileBlock:  # the grouped conv splits the stream into its 2 groups of 4
        blocks, within = spec.axes["grouped.weight"][0][0], spec.axes["grouped.weight"][1]
        assert spec.sizes[blocks] == 2 and spec.axes["stem.weight"][0] == (blocks, within)
    planted(model, x, spec)


# -- joins, gates and tiles: cat, GLU, PReLU, transposed grouped convs, InstanceNorm ------------------
class SkipUNet(nn.Module):
    """A U-Net's decoder: upsample by a transposed conv, join the encoder's skip by cat on channels."""

    def __init__(self, w=4):
        super().__init__()
        self.enc = nn.Conv2d(3, w, 3, padding=1)
        self.down = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec = nn.Conv2d(2 * w, w, 3, padding=1)
        self.head = nn.Linear(w, 3)

    def forward(self, x):
        s = torch.relu(self.enc(x))
        h = torch.relu(self.down(F.max_pool2d(s, 2)))
        h = torch.relu(self.dec(torch.cat([self.up(h), s], 1)))
        return self.head(h.mean((2, 3)))


def test_unet_skip_cat_keeps_the_decoder_input_permuted():
    torch.manual_seed(0)
    model = SkipUNet()
    x = torch.randn(4, 3, 8, 8)
    spec = infer_quietly(model, x)
    a = spec.axes
    skip = a["enc.weight"][0]
    assert skip is not None and a["up.weight"][1] == skip  # both halves of the join share one permutation
    assert a["dec.weight"][1] == (None, skip)  # (2 fixed halves, 4 channels)
    assert a["down.weight"][0] is not None and a["up.weight"][0] == a["down.weight"][0]
    planted(model, x, spec)


class DenseJoin(nn.Module):
    """DenseNet's growing concatenation: pieces of 8 and 4 channels meet in blocks of their common 4."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grow = nn.Conv2d(8, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = self.stem(x)
        h = torch.cat([h, torch.relu(self.grow(h))], 1)
        return self.head(torch.relu(self.bn(h)).mean((2, 3)))


def test_concatenation_of_unequal_pieces_moves_units_inside_common_blocks():
    torch.manual_seed(0)
    model = DenseJoin()
    with torch.no_grad():
        model.bn.running_mean.normal_()
    x = torch.randn(4, 3, 6, 6)
    spec = infer_quietly(model, x)
    a = spec.axes
    unit = a["grow.weight"][0]
    assert spec.sizes[unit] == 4 and a["stem.weight"][0] == (None, unit) and a["bn.weight"] == ((None, unit),)
    planted(model, x, spec)


class GatedNet(nn.Module):
    """GLU on channels, per-channel PReLU, a grouped transposed conv and an affine InstanceNorm."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)
        self.norm = nn.InstanceNorm2d(6, affine=True)
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.act(F.glu(self.inp(x), 1))  # 16 -> 8 channels
        h = torch.relu(self.norm(self.up(h))).mean((2, 3))
        return self.head(F.glu(self.fc(h), -1))


def test_glu_prelu_grouped_transposed_conv_and_instance_norm():
    torch.manual_seed(0)
    model = GatedNet()
    with torch.no_grad():
        model.act.weight.uniform_(-1, 1)
        model.norm.weight.normal_()
        model.norm.bias.normal_()
    x = torch.randn(4, 3, 4, 4)
    spec = infer_quietly(model, x)
    a = spec.axes
    blocks, within = a["up.weight"][0]  # transposed: (in channels, out channels per group, ...)
    assert spec.sizes[blocks] == 2 and a["act.weight"] == ((blocks, within),)
    assert a["inp.weight"][0] == (None, blocks, within)  # GLU's two halves, the units alike in both
    assert a["norm.weight"][0] == (blocks, a["up.weight"][1]) and a["fc.weight"][1] == a["norm.weight"][0]
    assert a["head.weight"][1] is not None and a["fc.weight"][0] == (None, a["head.weight"][1])
    planted(model, x, spec)


class WindowBlock(nn.Module):
    """Swin's habits: channels-last F.pad on H and W only, a fused qkv bias whose k third is zeroed in place
    through a slice, relu_ on a view, and a 1x1 adaptive pool of a channels-last map (ATen restrides it)."""

    def __init__(self, c=8, heads=2):
        super().__init__()
        self.heads = heads
        self.stem = nn.Conv2d(3, c, 1)
        self.qkv = nn.Linear(c, 3 * c)
        self.pos = nn.Linear(2, c)
        self.proj = nn.Linear(c, c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        h = self.stem(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        h = F.pad(h, (0, 0, 0, 1, 0, 1))  # pads W and H, not C
        B, H, W, C = h.shape
        bias = self.qkv.bias.clone()
        bias[C:2 * C].zero_()
        qkv = F.linear(h.reshape(B, H * W, C), self.qkv.weight, bias)
        q, k, v = qkv.reshape(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H, W, C)
        grid = x.new_zeros(H, W, 2)  # a constant built from the input
        p = self.pos(grid).view(H, W, C)
        p.view(-1).relu_()
        o = self.proj(o + p).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        return self.head(F.adaptive_avg_pool2d(o, 1).flatten(1))


def test_padding_block_slices_in_place_views_and_restrides_keep_channels():
    torch.manual_seed(0)
    model = WindowBlock()
    x = torch.randn(2, 3, 3, 3)
    spec = infer_quietly(model, x)
    a = spec.axes
    stream, out = a["stem.weight"][0], a["proj.weight"][0]
    assert stream is not None and out is not None and a["head.weight"] == (None, out)
    qkv = a["qkv.weight"][0]
    assert a["qkv.weight"][1] == stream and a["qkv.bias"] == (qkv,)
    assert qkv[0] is None and len(qkv) == 3  # (q|k|v fixed, heads, dims): the zeroed k third kept them
    assert a["proj.weight"][1] == a["pos.weight"][0] == qkv[1:]  # the position term joins the heads' output
    planted(model, x, spec)
