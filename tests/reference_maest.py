"""An independent, plain-torch MAEST written from MAEST_FACTS.md sections 2 and 3, for numerical tests.

Nothing here imports the project's modules: it builds random weights in the training repository's release layout
(section 3a), writes them in the published Hugging Face AST layout (section 3b) and runs the forward pass of section 2
directly from the raw release tensors.
"""

import torch
import torch.nn.functional as F


def random_release_state_dict(
    hidden_size: int = 32,
    num_layers: int = 2,
    freq_patches: int = 9,
    time_positions: int = 6,
    num_labels: int = 7,
    intermediate_size: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of a release `.ckpt` state dict (MAEST_FACTS 3a)."""
    generator = torch.Generator().manual_seed(seed)
    E = hidden_size
    inner = intermediate_size or 4 * E

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    state = {
        "cls_token": rand(1, 1, E),
        "dist_token": rand(1, 1, E),
        "new_pos_embed": rand(1, 2, E),
        "freq_new_pos_embed": rand(1, E, freq_patches, 1),
        "time_new_pos_embed": rand(1, E, 1, time_positions),
        "patch_embed.proj.weight": rand(E, 1, 16, 16, scale=0.05),
        "patch_embed.proj.bias": rand(E),
        "norm.weight": 1 + rand(E, scale=0.1),
        "norm.bias": rand(E, scale=0.1),
        "head.0.weight": 1 + rand(E, scale=0.1),
        "head.0.bias": rand(E, scale=0.1),
        "head.1.weight": rand(num_labels, E),
        "head.1.bias": rand(num_labels),
        "head_dist.weight": rand(num_labels, E),
        "head_dist.bias": rand(num_labels),
    }
    for i in range(num_layers):
        p = f"blocks.{i}."
        state.update(
            {
                p + "norm1.weight": 1 + rand(E, scale=0.1),
                p + "norm1.bias": rand(E, scale=0.1),
                p + "norm2.weight": 1 + rand(E, scale=0.1),
                p + "norm2.bias": rand(E, scale=0.1),
                p + "attn.qkv.weight": rand(3 * E, E),
                p + "attn.qkv.bias": rand(3 * E),
                p + "attn.proj.weight": rand(E, E),
                p + "attn.proj.bias": rand(E),
                p + "mlp.fc1.weight": rand(inner, E),
                p + "mlp.fc1.bias": rand(inner),
                p + "mlp.fc2.weight": rand(E, inner),
                p + "mlp.fc2.bias": rand(E),
            }
        )
    return state


def release_to_ast_layout(release: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write release tensors in the published mtg-upf AST layout (MAEST_FACTS 3b), pre-5.0 key names."""
    E = release["cls_token"].shape[-1]
    freq = release["freq_new_pos_embed"][0, :, :, 0]  # (E, F)
    time = release["time_new_pos_embed"][0, :, 0, :]  # (E, T)
    grid = freq.T[:, None, :] + time.T[None, :, :]  # (F, T, E): freq_pos[f] + time_pos[t]
    positions = torch.cat([release["new_pos_embed"][0], grid.reshape(-1, E)], dim=0)[None]
    b = "audio_spectrogram_transformer."
    out = {
        b + "embeddings.cls_token": release["cls_token"],
        b + "embeddings.distillation_token": release["dist_token"],
        b + "embeddings.position_embeddings": positions,
        b + "embeddings.patch_embeddings.projection.weight": release["patch_embed.proj.weight"],
        b + "embeddings.patch_embeddings.projection.bias": release["patch_embed.proj.bias"],
        b + "layernorm.weight": release["norm.weight"],
        b + "layernorm.bias": release["norm.bias"],
        "classifier.layernorm.weight": release["head.0.weight"],
        "classifier.layernorm.bias": release["head.0.bias"],
        "classifier.dense.weight": release["head.1.weight"],
        "classifier.dense.bias": release["head.1.bias"],
    }
    i = 0
    while f"blocks.{i}.norm1.weight" in release:
        s, t = f"blocks.{i}.", f"{b}encoder.layer.{i}."
        qkv_w, qkv_b = release[s + "attn.qkv.weight"], release[s + "attn.qkv.bias"]
        for j, name in enumerate(("query", "key", "value")):
            out[t + f"attention.attention.{name}.weight"] = qkv_w[j * E : (j + 1) * E]
            out[t + f"attention.attention.{name}.bias"] = qkv_b[j * E : (j + 1) * E]
        out[t + "attention.output.dense.weight"] = release[s + "attn.proj.weight"]
        out[t + "attention.output.dense.bias"] = release[s + "attn.proj.bias"]
        out[t + "intermediate.dense.weight"] = release[s + "mlp.fc1.weight"]
        out[t + "intermediate.dense.bias"] = release[s + "mlp.fc1.bias"]
        out[t + "output.dense.weight"] = release[s + "mlp.fc2.weight"]
        out[t + "output.dense.bias"] = release[s + "mlp.fc2.bias"]
        out[t + "layernorm_before.weight"] = release[s + "norm1.weight"]
        out[t + "layernorm_before.bias"] = release[s + "norm1.bias"]
        out[t + "layernorm_after.weight"] = release[s + "norm2.weight"]
        out[t + "layernorm_after.bias"] = release[s + "norm2.bias"]
        i += 1
    return {k: v.clone().contiguous() for k, v in out.items()}


@torch.no_grad()
def reference_forward(
    release: dict[str, torch.Tensor],
    input_values: torch.Tensor,
    head_dim: int = 64,
    layer_norm_eps: float = 1e-6,
    head_layer_norm_eps: float = 1e-5,
    keep_time: list[int] | None = None,
    keep_freq: list[int] | None = None,
):
    """MAEST section 2 on one window per item `(batch, frames, 96)`, straight from release tensors.

    `keep_time` / `keep_freq` keep only those time columns / frequency rows of the patch grid (inference patchout).

    Returns `(logits, hidden_states)`: hidden_states lists the token sequence after the embeddings and after each
    block (before the final norm), each `(batch, 2 + F*T', E)`, patches frequency-major.
    """
    x = input_values.double()
    r = {k: v.double() for k, v in release.items()}
    E = r["cls_token"].shape[-1]
    heads = E // head_dim
    patches = F.conv2d(x.transpose(1, 2)[:, None], r["patch_embed.proj.weight"], r["patch_embed.proj.bias"], stride=10)
    n_time = patches.shape[-1]  # (B, E, F, T')
    patches = patches + r["freq_new_pos_embed"] + r["time_new_pos_embed"][..., :n_time]
    if keep_freq is not None:  # inference patchout: after the positions are added
        patches = patches[:, :, keep_freq]
    if keep_time is not None:
        patches = patches[:, :, :, keep_time]
    tokens = patches.flatten(2).transpose(1, 2)  # token f * T' + t
    batch = x.shape[0]
    cls = (r["cls_token"] + r["new_pos_embed"][:, :1]).expand(batch, -1, -1)
    dist = (r["dist_token"] + r["new_pos_embed"][:, 1:2]).expand(batch, -1, -1)
    h = torch.cat([cls, dist, tokens], dim=1)
    hidden_states = [h]
    i = 0
    while f"blocks.{i}.norm1.weight" in r:
        p = f"blocks.{i}."
        y = F.layer_norm(h, (E,), r[p + "norm1.weight"], r[p + "norm1.bias"], layer_norm_eps)
        qkv = F.linear(y, r[p + "attn.qkv.weight"], r[p + "attn.qkv.bias"])
        qkv = qkv.view(batch, -1, 3, heads, E // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = torch.softmax(q @ k.transpose(-1, -2) * (E // heads) ** -0.5, dim=-1)
        context = (attention @ v).transpose(1, 2).reshape(batch, -1, E)
        h = h + F.linear(context, r[p + "attn.proj.weight"], r[p + "attn.proj.bias"])
        y = F.layer_norm(h, (E,), r[p + "norm2.weight"], r[p + "norm2.bias"], layer_norm_eps)
        h = h + F.linear(F.gelu(F.linear(y, r[p + "mlp.fc1.weight"], r[p + "mlp.fc1.bias"])), r[p + "mlp.fc2.weight"], r[p + "mlp.fc2.bias"])
        hidden_states.append(h)
        i += 1
    h = F.layer_norm(h, (E,), r["norm.weight"], r["norm.bias"], layer_norm_eps)
    pooled = (h[:, 0] + h[:, 1]) / 2
    pooled = F.layer_norm(pooled, (E,), r["head.0.weight"], r["head.0.bias"], head_layer_norm_eps)
    logits = F.linear(pooled, r["head.1.weight"], r["head.1.bias"])
    return logits.float(), [s.float() for s in hidden_states]
