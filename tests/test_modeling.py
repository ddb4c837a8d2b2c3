"""MaestModel / MaestForAudioClassification on tiny random weights, against an independent plain-torch forward."""

import math

import pytest
import torch
from conftest import tiny_config, tiny_model
from convert_utils import published_config
from reference_maest import random_release_state_dict, reference_forward, release_to_ast_layout

from configuration_maest import MaestConfig
from modeling_maest import MaestForAudioClassification, MaestModel, window_starts


HEAD_DIM = 16  # tiny_config: 32 wide, 2 heads


def loaded_tiny_model(seed=0, **overrides):
    """A tiny model whose weights come from random release tensors (also returned) via the AST layout."""
    config = tiny_config(**overrides)
    release = random_release_state_dict(
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        freq_patches=config.num_frequency_patches,
        time_positions=config.num_time_positions,
        num_labels=config.num_labels,
        intermediate_size=config.intermediate_size,
        seed=seed,
    )
    model = MaestForAudioClassification(config).eval()
    result = model.load_state_dict(release_to_ast_layout(release), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model, release


def spectrogram(batch, frames, seed=0):
    return torch.randn(batch, frames, 96, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("frames", [76, 75, 40, 16])
def test_matches_reference_on_logits_and_every_token(frames):
    """Full window, a shorter one (first time positions) and a single patch column, token by token."""
    model, release = loaded_tiny_model()
    x = spectrogram(3, frames)
    expected_logits, expected_hidden = reference_forward(release, x, head_dim=HEAD_DIM)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    assert out.logits.shape == (3, 7)
    torch.testing.assert_close(out.logits, expected_logits, atol=1e-4, rtol=0)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    for ours, theirs in zip(out.hidden_states, expected_hidden):
        assert ours.shape == theirs.shape == (3, 2 + 9 * ((frames - 16) // 10 + 1), 32)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_base_model_outputs():
    model, release = loaded_tiny_model()
    base = model.audio_spectrogram_transformer
    x = spectrogram(2, 60)
    with torch.no_grad():
        out = base(x, output_hidden_states=True)
    final = torch.nn.functional.layer_norm(out.hidden_states[-1], (32,), base.layernorm.weight, base.layernorm.bias, 1e-6)
    torch.testing.assert_close(out.last_hidden_state, final)
    torch.testing.assert_close(out.pooler_output, (out.last_hidden_state[:, 0] + out.last_hidden_state[:, 1]) / 2)
    # MaestModel loads the classification checkpoint too (base_model_prefix).
    assert isinstance(base, MaestModel)


def test_eager_equals_sdpa():
    model, _ = loaded_tiny_model()
    assert model.config._attn_implementation == "sdpa"
    x = spectrogram(3, 300)
    mask = torch.ones(3, 300, dtype=torch.long)
    mask[1, 50:] = 0
    mask[2, 120:] = 0
    with torch.no_grad():
        sdpa = model(x, attention_mask=mask)
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        eager = model(x, attention_mask=mask)
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(sdpa.window_logits, eager.window_logits, atol=1e-5, rtol=0)


def test_output_attentions():
    model, _ = loaded_tiny_model()
    x = spectrogram(2, 56)
    with torch.no_grad():
        out = model(x, output_attentions=True)
    tokens = 2 + 9 * 5
    assert len(out.attentions) == 2
    for weights in out.attentions:
        assert weights.shape == (2, 2, tokens, tokens)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, tokens))


def test_window_starts_cover_every_frame():
    assert window_starts(626, 626, 625) == [0]
    assert window_starts(100, 626, 625) == [0]
    assert window_starts(1876, 626, 625) == [0, 625, 1250]  # 30 s: exactly three windows
    assert window_starts(1877, 626, 625) == [0, 625, 1250, 1251]
    assert window_starts(15174, 626, 625)[-2:] == [14375, 14548]  # the 4-minute test track
    for frames in [627, 700, 1251, 2000, 5003]:
        for window, hop in [(626, 625), (76, 70), (76, 76), (76, 13)]:
            starts = window_starts(frames, window, hop)
            covered = torch.zeros(frames, dtype=torch.bool)
            for start in starts:
                assert 0 <= start and start + window <= frames
                covered[start : start + window] = True
            assert covered.all()
            assert starts == sorted(set(starts))


def test_long_input_pools_the_windows_by_hand():
    """Track scores are the mean of the window probabilities, with windows cut as documented."""
    model, release = loaded_tiny_model()
    frames = 333
    x = spectrogram(1, frames, seed=3)
    starts = window_starts(frames, 76, 70)
    assert starts == [0, 70, 140, 210, 257]
    with torch.no_grad():
        out = model(x)
    manual = torch.cat([reference_forward(release, x[:, s : s + 76], head_dim=HEAD_DIM)[0] for s in starts])
    torch.testing.assert_close(out.window_logits[0], manual, atol=1e-4, rtol=0)
    assert out.window_starts[0].tolist() == starts
    torch.testing.assert_close(out.logits.sigmoid()[0], manual.sigmoid().mean(0), atol=1e-5, rtol=0)


def test_pooling_is_exact_and_finite_at_extremes():
    model = tiny_model()
    window_logits = torch.tensor([[[100.0, -100.0, 0.0, 30.0], [100.0, -100.0, 5.0, -30.0], [0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    pooled = model.pool_windows(window_logits, mask)
    assert torch.isfinite(pooled).all()
    expected = window_logits[:, :2].sigmoid().mean(1)
    torch.testing.assert_close(pooled.sigmoid(), expected, atol=1e-7, rtol=0)

    model.config.problem_type = "single_label_classification"
    pooled = model.pool_windows(window_logits, mask)
    torch.testing.assert_close(pooled.softmax(-1), window_logits[:, :2].softmax(-1).mean(1), atol=1e-6, rtol=0)
    model.config.problem_type = "regression"
    torch.testing.assert_close(model.pool_windows(window_logits, mask), window_logits[:, :2].mean(1))


def test_padded_batch_equals_items_one_by_one():
    model, _ = loaded_tiny_model()
    lengths = [16, 40, 76, 77, 200, 333]
    x = spectrogram(len(lengths), max(lengths), seed=5)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        x[i, n:] = 123.0  # padding content must not matter
    with torch.no_grad():
        batched = model(x, attention_mask=mask)
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n])
            count = len(window_starts(n, 76, 70))
            torch.testing.assert_close(batched.logits[i], alone.logits[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(batched.window_logits[i, :count], alone.window_logits[0], atol=1e-5, rtol=0)
            assert batched.window_mask[i].tolist() == [True] * count + [False] * (batched.window_logits.shape[1] - count)
            assert (batched.window_logits[i, count:] == 0).all()


def test_window_chunking_does_not_change_results():
    x = spectrogram(2, 500, seed=7)
    small, _ = loaded_tiny_model(max_windows_per_batch=1)
    large, _ = loaded_tiny_model(max_windows_per_batch=100)
    with torch.no_grad():
        torch.testing.assert_close(small(x).logits, large(x).logits, atol=1e-5, rtol=0)


def test_inference_patchout_matches_reference():
    model, release = loaded_tiny_model(inference_patchout_time=2, inference_patchout_freq=3)
    x = spectrogram(2, 76)
    keep_time, keep_freq = [0, 2, 4, 6], [0, 3, 6]
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    logits, hidden = reference_forward(release, x, head_dim=HEAD_DIM, keep_time=keep_time, keep_freq=keep_freq)
    assert out.hidden_states[0].shape[1] == 2 + len(keep_time) * len(keep_freq)
    torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)

    plain, _ = loaded_tiny_model()
    with torch.no_grad():
        dropped = plain(x, drop_time_indices=[1, 3, 5], drop_freq_indices=[1, 2, 4, 5, 7, 8])
    torch.testing.assert_close(dropped.logits, logits, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="drop_time_indices holds 9"):
        plain(x, drop_time_indices=[9])
    with pytest.raises(ValueError, match="removed every patch"):
        plain(x, drop_freq_indices=list(range(9)))


def test_losses_follow_problem_type():
    model = tiny_model()
    x = spectrogram(2, 40)
    with torch.no_grad():
        logits = model(x).logits
        targets = torch.tensor([[1.0, 0, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0]])
        loss = model(x, labels=targets).loss
        torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(logits, targets))
        with pytest.raises(ValueError, match="multi-hot labels of shape"):
            model(x, labels=torch.tensor([1, 2]))
        model.config.problem_type = "single_label_classification"
        classes = torch.tensor([3, 6])
        torch.testing.assert_close(model(x, labels=classes).loss, torch.nn.functional.cross_entropy(logits, classes))
        model.config.problem_type = "regression"
        values = torch.randn(2, 7)
        torch.testing.assert_close(model(x, labels=values).loss, torch.nn.functional.mse_loss(logits, values))
        model.config.problem_type = None  # inferred from the labels, as in transformers
        torch.testing.assert_close(model(x, labels=classes).loss, torch.nn.functional.cross_entropy(logits, classes))


def test_gradient_checkpointing_gives_the_same_gradients():
    x = spectrogram(2, 76)
    targets = torch.zeros(2, 7)

    def gradients(checkpointing, seed):
        # Dropout is on, so the recomputation must replay the same dropout masks to give the same gradients.
        model = tiny_model(seed=1, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.audio_spectrogram_transformer.encoder.layer[0].gradient_checkpointing
        calls = []
        model.audio_spectrogram_transformer.encoder.layer[0].attention.register_forward_hook(lambda *_: calls.append(1))
        torch.manual_seed(seed)
        model(x, labels=targets).loss.backward()
        return model.audio_spectrogram_transformer.embeddings.position_embeddings.grad.clone(), len(calls)

    plain, plain_calls = gradients(False, seed=5)
    checkpointed, checkpointed_calls = gradients(True, seed=5)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # checkpointing recomputes the block in the backward pass
    torch.testing.assert_close(checkpointed, plain)
    other_masks, _ = gradients(False, seed=6)
    assert not torch.allclose(other_masks, plain, atol=1e-6)  # dropout is active: the masks change the gradients


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: torch.randn(40, 96), r"Add a batch dimension"),
        (lambda: torch.randn(1, 40, 128), r"\(batch, frames, 96\).*\(1, 40, 128\)"),
        (lambda: torch.randn(1, 15, 96), r"15 mel frames, fewer than one patch \(16 frames"),
        (lambda: torch.full((1, 40, 96), float("nan")), r"NaN or Inf"),
        (lambda: torch.ones(1, 40, 96, dtype=torch.long), r"floating point"),
    ],
)
def test_bad_input_values_get_clear_errors(make, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        model(make())


def test_bad_attention_mask_and_long_window_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"attention_mask must have shape"):
        model(torch.randn(2, 40, 96), attention_mask=torch.ones(2, 39))
    mask = torch.ones(2, 40)
    mask[1, 10:] = 0
    with pytest.raises(ValueError, match=r"Item 1 of the batch has 10 mel frames"):
        model(torch.randn(2, 40, 96), attention_mask=mask)
    with pytest.raises(ValueError, match=r"one window of at most max_length=76 frames"):
        model.audio_spectrogram_transformer(torch.randn(1, 77, 96))
    with pytest.raises(ValueError, match=r"one window per item"):
        model(torch.randn(1, 200, 96), output_hidden_states=True)


def test_save_and_reload_is_identical(tmp_path):
    model, _ = loaded_tiny_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    again = MaestForAudioClassification.from_pretrained(tmp_path).eval()
    assert again.config.head_layer_norm_eps == 1e-5 and again.config.window_hop == 70
    x = spectrogram(1, 250)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, again(x).logits)
    base = MaestModel.from_pretrained(tmp_path)
    torch.testing.assert_close(
        base.embeddings.position_embeddings, model.audio_spectrogram_transformer.embeddings.position_embeddings
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30, num_attention_heads=4), "divisible by num_attention_heads"),
        (dict(time_stride=17), "larger than patch_size"),
        (dict(frequency_stride=17), "larger than patch_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer, got 0"),
        (dict(intermediate_size=-3), "intermediate_size must be a positive integer, got -3"),
        (dict(max_length=10), "shorter than one patch"),
        (dict(window_hop=77), "larger than the window"),
        (dict(hidden_dropout_prob=1.5), "probability"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps must be a positive number"),
        (dict(patch_size=[16, 8]), "square patches"),
    ],
)
def test_invalid_config_values_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_published_ast_config_loads():
    """The config.json fields of the published mtg-upf checkpoints (AST names) load into MaestConfig."""
    published = published_config([f"label {i}" for i in range(400)])  # the 20 s model's config.json
    config = MaestConfig(**published)
    assert config.num_labels == 400 and config.window_hop == 1250 and config.num_time_positions == 125
    assert config.head_layer_norm_eps == 1e-5
    model = MaestForAudioClassification(tiny_config())
    assert model.classifier.layernorm.eps == 1e-5  # the trained head norm, not the AST port's 1e-6
    assert model.audio_spectrogram_transformer.layernorm.eps == 1e-6
    assert model.audio_spectrogram_transformer.encoder.layer[0].layernorm_before.eps == 1e-6
    assert math.isclose(config.window_seconds, 20.096)


# ---------------------------------------------------------------------------------------------------------------------
# Training-time patchout (MaestEmbeddings in training mode)
# ---------------------------------------------------------------------------------------------------------------------


def embedding_tokens(model, x, **kwargs):
    """The token sequence entering the first block: (batch, tokens, hidden)."""
    return model.audio_spectrogram_transformer(x, output_hidden_states=True, **kwargs).hidden_states[0]


def grid_positions(train_tokens, eval_tokens):
    """Map each patch token of a training-mode pass to its index in the full (eval) token grid, by exact equality."""
    patches = eval_tokens[0, 2:]
    found = []
    for token in train_tokens[0, 2:]:
        matches = (patches == token).all(dim=-1).nonzero().flatten().tolist()
        assert len(matches) == 1, "a training token is not one of the window's patch tokens"
        found.append(matches[0])
    return found


def test_structured_patchout_drops_random_rows_and_columns_in_training_only():
    # tiny_config: 76-frame windows = 9 frequency rows x 7 time columns = 63 patches.
    torch.manual_seed(0)
    model = tiny_model(seed=1, train_patchout_time=2, train_patchout_freq=3)
    plain = tiny_model(seed=1)
    x = torch.randn(2, 76, 96)
    with torch.no_grad():
        full = embedding_tokens(model.eval(), x)
        assert full.shape[1] == 2 + 63
        torch.testing.assert_close(model(x).logits, plain(x).logits, rtol=0, atol=0)  # eval: patchout is off
        model.train()
        kept_sets = set()
        for _ in range(6):
            tokens = embedding_tokens(model, x)
            assert tokens.shape[1] == 2 + (9 - 3) * (7 - 2)
            torch.testing.assert_close(tokens[:, :2], full[:, :2])  # CLS and distillation are never dropped
            index = grid_positions(tokens, full)
            rows, columns = sorted({i // 7 for i in index}), sorted({i % 7 for i in index})
            # A structured patchout keeps whole rows and columns: the kept tokens are their full product, in order.
            assert (len(rows), len(columns)) == (6, 5)
            assert index == [f * 7 + t for f in rows for t in columns]
            kept_sets.add((tuple(rows), tuple(columns)))
        assert len(kept_sets) > 1, "the dropped rows / columns should change between batches"
        # Back in evaluation mode everything is kept again.
        torch.testing.assert_close(embedding_tokens(model.eval(), x), full, rtol=0, atol=0)


def test_unstructured_patchout_and_the_one_patch_minimum():
    x = torch.randn(1, 76, 96)
    with torch.no_grad():
        model = tiny_model(train_patchout_unstructured=10)
        full = embedding_tokens(model, x)
        tokens = embedding_tokens(model.train(), x)
        assert tokens.shape[1] == 2 + 63 - 10
        index = grid_positions(tokens, full)
        assert index == sorted(index) and len(set(index)) == 53
        # Dropping more than there is keeps one column / row / patch.
        greedy = tiny_model(train_patchout_time=50, train_patchout_freq=50, train_patchout_unstructured=50).train()
        assert embedding_tokens(greedy, x).shape[1] == 2 + 1
        assert embedding_tokens(greedy.eval(), x).shape[1] == 2 + 63


def test_random_time_offset_in_training_only():
    model = tiny_model(seed=2, train_random_time_offset=True)
    embeddings = model.audio_spectrogram_transformer.embeddings
    x = torch.randn(1, 36, 96)  # 3 time columns of the 7 in the position table
    with torch.no_grad():
        grid = embeddings.patch_embeddings(x)  # (1, 9, 3, 32)
        table = embeddings.position_embeddings[:, 2:].reshape(1, 9, 7, 32)
        expected = {o: (grid + table[:, :, o : o + 3]).flatten(1, 2) for o in range(5)}
        torch.testing.assert_close(embedding_tokens(model.eval(), x)[:, 2:], expected[0])
        model.train()
        torch.manual_seed(0)
        seen = set()
        for _ in range(25):
            patches = embedding_tokens(model, x)[:, 2:]
            offsets = [o for o, e in expected.items() if torch.allclose(patches, e, atol=1e-6, rtol=0)]
            assert len(offsets) == 1
            seen.add(offsets[0])
        assert len(seen) >= 3, f"offsets drawn: {sorted(seen)}"
        # A full-length window has no room for an offset.
        full = torch.randn(1, 76, 96)
        torch.testing.assert_close(embedding_tokens(model, full), embedding_tokens(model.eval(), full))


def test_patchout_with_padded_training_batch():
    """Padded items (attention mask) combined with every kind of patchout: finite loss and gradients."""
    model = tiny_model(train_patchout_time=2, train_patchout_freq=2, train_patchout_unstructured=5,
                       train_random_time_offset=True).train()  # fmt: skip
    x = torch.randn(3, 76, 96)
    mask = torch.ones(3, 76, dtype=torch.long)
    mask[1, 40:] = 0
    mask[2, 20:] = 0
    labels = torch.tensor([[1.0, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0]])
    loss = model(x, attention_mask=mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------------------------------------
# Defaults and attention masks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers, middle", [(2, 1), (5, 2)])
def test_embedding_block_defaults_to_the_middle_block(layers, middle):
    model = tiny_model(num_hidden_layers=layers)
    maest = model.audio_spectrogram_transformer
    x = spectrogram(2, 76, seed=8)
    with torch.no_grad():
        # The paper's embedding after block `middle`, from the hidden states of a plain forward (index 0 = embeddings).
        hidden = maest(x, output_hidden_states=True).hidden_states[middle + 1]
        expected = torch.cat([hidden[:, 0], hidden[:, 1], hidden[:, 2:].mean(dim=1)], dim=-1)
        torch.testing.assert_close(maest.embed(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.embed(x), expected, atol=1e-6, rtol=0)
        long = spectrogram(1, 200, seed=9)
        torch.testing.assert_close(model.embed(long), model.embed(long, block=middle), atol=0, rtol=0)


def test_attention_mask_must_be_right_padding():
    model = tiny_model()
    x = spectrogram(2, 60, seed=10)
    right = torch.ones(2, 60, dtype=torch.long)
    right[1, 40:] = 0
    left = right.flip(1)
    with pytest.raises(ValueError, match=r"item 1 is not right padding.*first 1 is at frame 20.*right padding only"):
        model(x, attention_mask=left)
    holes = torch.ones(2, 60, dtype=torch.long)
    holes[0, 30:35] = 0
    with pytest.raises(ValueError, match=r"item 0 is not right padding.*put each item's frames first"):
        model.audio_spectrogram_transformer(x, attention_mask=holes)
    with pytest.raises(ValueError, match=r"item 0 is not right padding"):
        model.embed(x, attention_mask=holes)
    with torch.no_grad():
        # Right padding, as a torch mask, a bool mask or a numpy array, is the items alone.
        padded = model(x, attention_mask=right).logits
        torch.testing.assert_close(padded[1], model(x[1:, :40]).logits[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(model(x, attention_mask=right.bool()).logits, padded, atol=0, rtol=0)
        torch.testing.assert_close(model(x, attention_mask=right.numpy()).logits, padded, atol=0, rtol=0)
    with pytest.raises(TypeError, match=r"attention_mask must be a torch.Tensor or numpy array.*list"):
        model(x, attention_mask=right.tolist())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_labels": 10**9}, r"num_labels must be a whole number from 1 to 1,000,000, got 1000000000"),
        ({"id2label": {i: f"style {i}" for i in range(1_000_001)}}, r"got 1000001"),
        ({"max_length": 10**9}, r"most of them in the position table"),
        ({"hidden_size": 64 * 768, "num_attention_heads": 768}, r"most of them in the blocks"),
    ],
)
def test_sizes_no_real_model_has_are_refused_before_allocating(overrides, message):
    import tracemalloc

    kwargs = dict(overrides)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=message):
            tiny_config(**kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Nothing the size of the model (or of an id2label of 10**9 entries) was built: the check comes first.
    assert peak < 64 * 2**20
    assert tiny_config(num_labels=1_000).num_labels == 1_000
