"""What the compatibility stage computes, through public behaviour only (repo id, pipelines, Auto classes).

`make_reference.py` runs these once with the project's pinned transformers and saves the results; `test_compat.py`
runs them again in a venv with another transformers release and compares. Nothing here imports the root modules:
the model code comes from the Hugging Face cache through `trust_remote_code`, as on a user's machine.
"""

import numpy as np


REPO_ID = "maest-compat/discogs-maest-tiny"
# Absolute and relative tolerance of every comparison with the pinned version's numbers.
TOLERANCE = 1e-5
STEREO_RATE = 44100


def inputs(seed: int = 0) -> dict:
    """Deterministic inputs: 12 s of 44.1 kHz stereo audio (2, samples), a window of log-mel frames, labels."""
    rng = np.random.default_rng(seed)
    t = np.arange(12 * STEREO_RATE) / STEREO_RATE
    left = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.2 * np.sin(2 * np.pi * 330.0 * t + 0.5) + 0.05 * rng.standard_normal(t.size)
    return {
        "stereo": np.stack([left, right]).astype(np.float32),
        # Two windows of 626 frames x 96 mel bins (the tiny repo's window), the scale of normalised log-mels.
        "input_values": (0.5 * rng.standard_normal((2, 626, 96))).astype(np.float32),
        # Multi-hot targets over the 400 Discogs labels.
        "labels": (rng.random((2, 400)) < 0.02).astype(np.float32),
    }


def pipeline_numbers(audio_path: str, stereo: np.ndarray) -> dict:
    """All 400 scores of pipeline("audio-classification") and the embedding of pipeline("feature-extraction")."""
    from transformers import pipeline

    classifier = pipeline("audio-classification", model=REPO_ID, trust_remote_code=True)
    embedder = pipeline("feature-extraction", model=REPO_ID, trust_remote_code=True)
    labels = list(classifier.model.config.id2label.values())
    out = {}
    for name, item in (("file", audio_path), ("stereo", {"array": stereo, "sampling_rate": STEREO_RATE})):
        scores = {entry["label"]: entry["score"] for entry in classifier(item, top_k=None)}
        out[f"scores_{name}"] = np.array([scores[label] for label in labels], dtype=np.float64)
        # block given explicitly: the tiny repo has 2 blocks (the published models' default, 6, does not exist).
        out[f"embedding_{name}"] = np.asarray(embedder(item, block=1), dtype=np.float64)
    return out


def load_auto(source=REPO_ID):
    """AutoConfig, AutoModel, AutoModelForAudioClassification and AutoFeatureExtractor with trust_remote_code."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

    return (
        AutoConfig.from_pretrained(source, trust_remote_code=True),
        AutoModel.from_pretrained(source, trust_remote_code=True).eval(),
        AutoModelForAudioClassification.from_pretrained(source, trust_remote_code=True).eval(),
        AutoFeatureExtractor.from_pretrained(source, trust_remote_code=True),
    )


def auto_numbers(data: dict, source=REPO_ID) -> dict:
    """Config fields, the two models' outputs on `input_values` and the feature extractor's output on the stereo."""
    import torch

    config, model, classifier, extractor = load_auto(source)
    x = torch.from_numpy(data["input_values"])
    with torch.no_grad():
        base = model(x)
        logits = classifier(x).logits
    # In a list: a 2-D item is one multi-channel signal (a bare 2-D array is a batch of mono signals).
    features = extractor([data["stereo"]], sampling_rate=STEREO_RATE, return_tensors="np")["input_values"]
    return {
        "config": np.array(
            [config.hidden_size, config.num_hidden_layers, config.max_length, config.window_hop, config.num_labels]
        ),
        "last_hidden_state": base.last_hidden_state.double().numpy(),
        "pooler_output": base.pooler_output.double().numpy(),
        "logits": logits.double().numpy(),
        "features": np.asarray(features, dtype=np.float64),
    }


def training_step(data: dict, learning_rate: float = 0.5, gradient_checkpointing: bool = False) -> dict:
    """One SGD step with labels on the classifier: loss before and after, gradient norms before the step.

    With `gradient_checkpointing=True` the blocks are recomputed in the backward pass (same numbers expected).
    """
    import torch

    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(REPO_ID, trust_remote_code=True)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    # Forward calls of every submodule during the forward and backward pass: recomputed blocks are called twice.
    calls = []
    for module in model.modules():
        module.register_forward_hook(lambda *args: calls.append(1))
    x, labels = torch.from_numpy(data["input_values"]), torch.from_numpy(data["labels"])
    loss = model(x, labels=labels).loss
    loss.backward()
    module_calls = len(calls)
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= learning_rate * p.grad
        after = model(x, labels=labels).loss
    return {
        "module_calls": np.array(module_calls),
        "loss_before": np.array(loss.item()),
        "loss_after": np.array(after.item()),
        "grad_norms": np.array([float(grads[name].norm()) if grads[name] is not None else np.nan for name in sorted(grads)]),
        "grad_names": np.array(sorted(grads)),
        "weight_change": np.array(
            [float((p.detach() - before[name]).abs().max()) for name, p in sorted(model.named_parameters())]
        ),
    }
