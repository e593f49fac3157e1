"""ClipBackbone: exact text-embedding injection, deep prompts at the right layers, checkpoint errors."""
from __future__ import annotations

import pytest
import torch
import open_clip
import yaml
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from vlpt.backbone import ClipBackbone
from vlpt.backbone.clip import MODEL_CONFIG_DIR, resolve_quick_gelu
from vlpt.errors import CheckpointError, ConfigError
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.paths import STARTER_WEIGHTS


def _record_block_inputs(blocks):
    seen = {}
    handles = [
        block.register_forward_pre_hook(lambda module, args, i=i: seen.__setitem__(i, args[0].detach().clone()))
        for i, block in enumerate(blocks)
    ]
    return seen, handles


def test_backbone_is_frozen_and_stays_in_eval_mode(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not tiny_backbone.model.training


def test_text_embedding_injection_reproduces_encode_text(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a dog.", "itap of a red circle.", "x"])
    direct = tiny_backbone.encode_text(tokens)
    embeds, eot = tiny_backbone.embed_tokens(tokens), tiny_backbone.eot_positions(tokens)
    tiny_backbone.full_text_sequence = True
    try:  # over the whole context: exactly open_clip's computation
        assert torch.equal(direct, tiny_backbone.encode_text_embeds(embeds, eot))
    finally:
        tiny_backbone.full_text_sequence = False
    # cut after the last end-of-text token (tests/test_text_sequence_cut.py): the same to float rounding
    torch.testing.assert_close(tiny_backbone.encode_text_embeds(embeds, eot), direct, rtol=1e-5,
                               atol=1e-5 * float(direct.abs().max()))


def test_too_long_text_is_a_clear_error(tiny_backbone):
    with pytest.raises(ConfigError, match="longer than the backbone's context of 32 tokens"):
        tiny_backbone.tokenize(["word " * 40])


def test_image_deep_prompts_enter_the_chosen_layers_only(tiny_backbone):
    images = torch.randn(2, 3, 32, 32)
    blocks = tiny_backbone.model.visual.transformer.resblocks
    n_patches = 1 + (32 // 4) ** 2
    prompt1, prompt3 = torch.randn(3, 128), torch.randn(3, 128)
    seen, handles = _record_block_inputs(blocks)
    prompted = tiny_backbone.encode_image(images, deep_prompts={1: prompt1, 3: prompt3})
    for h in handles:
        h.remove()
    assert [seen[i].shape[1] for i in range(4)] == [n_patches, n_patches + 3, n_patches + 3, n_patches + 3]
    assert torch.equal(seen[1][:, 1:4], prompt1.expand(2, -1, -1))
    assert torch.equal(seen[3][:, 1:4], prompt3.expand(2, -1, -1))
    assert not torch.equal(seen[2][:, 1:4], prompt1.expand(2, -1, -1))  # layer 1 transformed them
    plain = tiny_backbone.encode_image(images)
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain)


def test_patch_embeddings_are_open_clips_embedding_step_before_ln_pre(tiny_backbone):
    images = torch.randn(2, 3, 32, 32)
    visual = tiny_backbone.model.visual
    assert torch.equal(visual.ln_pre(tiny_backbone.patch_embeddings(images)), visual._embeds(images))


def test_input_prompts_are_normalized_with_the_patches(tiny_backbone):
    prompt = torch.randn(3, 128)
    seen, handles = _record_block_inputs(tiny_backbone.model.visual.transformer.resblocks)
    tiny_backbone.encode_image(torch.randn(2, 3, 32, 32), deep_prompts={0: prompt})
    for h in handles:
        h.remove()
    assert torch.allclose(seen[0][:, 1:4], tiny_backbone.model.visual.ln_pre(prompt).expand(2, -1, -1), atol=1e-6)


def test_image_without_prompts_matches_open_clip(tiny_backbone):
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(tiny_backbone.encode_image(images), tiny_backbone.model.encode_image(images))


def test_text_deep_prompts_replace_context_slots_at_the_chosen_layer(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a dog."])
    embeds = tiny_backbone.embed_tokens(tokens)
    prompt = torch.randn(2, 128)
    seen, handles = _record_block_inputs(tiny_backbone.model.transformer.resblocks)
    out = tiny_backbone.encode_text_embeds(embeds, tiny_backbone.eot_positions(tokens), deep_prompts={2: prompt})
    for h in handles:
        h.remove()
    assert torch.equal(seen[2][0, 1:3], prompt)
    assert not torch.equal(seen[1][0, 1:3], prompt)
    assert not torch.equal(out, tiny_backbone.encode_text(tokens))


def test_deep_prompt_at_a_missing_layer_is_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="layers 0..3"):
        tiny_backbone.encode_image(torch.randn(1, 3, 32, 32), deep_prompts={7: torch.randn(2, 128)})


def test_unknown_architecture_and_tag_name_what_is_valid():
    with pytest.raises(ConfigError, match="unknown backbone architecture 'ViT-Z-99'"):
        ClipBackbone("ViT-Z-99")
    with pytest.raises(ConfigError, match="valid tags: .*openai"):
        ClipBackbone("ViT-B-32", pretrained="no-such-tag")


def test_missing_checkpoint_file_is_named(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=f"{missing} does not exist"):
        ClipBackbone("vlpt-starter-vit", pretrained=str(missing))


def test_checkpoint_of_another_architecture_is_rejected(tmp_path, tiny_backbone):
    state = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    state["visual.conv1.weight"] = torch.zeros(128, 3, 8, 8)  # patch 8 instead of 4
    del state["logit_scale"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        ClipBackbone("vlpt-starter-vit", pretrained=str(path))
    message = str(info.value)
    assert str(path) in message and "vlpt-starter-vit" in message
    assert "logit_scale" in message and "extra.weight" in message and "visual.conv1.weight" in message


def test_corrupt_checkpoint_is_named(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt cannot be read"):
        ClipBackbone("vlpt-starter-vit", pretrained=str(path))


@pytest.mark.skipif(not STARTER_WEIGHTS.is_file(), reason="starter weights not built")
def test_shipped_starter_weights_load_and_are_small():
    backbone = ClipBackbone("vlpt-starter-vit", pretrained="vlpt-starter")
    assert STARTER_WEIGHTS.stat().st_size < 20 * 2**20
    assert backbone.describe() == "vlpt-starter-vit@vlpt-starter"


def test_local_torch_checkpoint_that_fits_is_loaded(tmp_path, tiny_backbone):
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": tiny_backbone.model.state_dict()}, path)
    loaded = ClipBackbone("vlpt-starter-vit", pretrained=str(path), quick_gelu=False)
    tokens = loaded.tokenize(["a photo of a dog."])
    assert torch.equal(loaded.encode_text(tokens), tiny_backbone.encode_text(tokens))
    assert loaded.describe() == f"vlpt-starter-vit@{path}+gelu"


def _without_download(monkeypatch) -> list[dict]:
    """Make open_clip build the architecture without fetching weights; returns the calls' arguments."""
    import vlpt.backbone.clip as clip_module

    calls = []
    create = clip_module.open_clip.create_model

    def create_offline(name, pretrained=None, **kwargs):
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(clip_module.open_clip, "create_model", create_offline)
    return calls


def test_openai_weights_run_quickgelu_from_a_suite(tmp_path, monkeypatch):
    calls = _without_download(monkeypatch)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "openai", "backbone": {"model": "ViT-B-16", "pretrained": "openai"},
        "experiments": [{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                         "methods": ["zeroshot"]}],
    }))
    backbone = Harness(load_suite(suite), output=tmp_path / "out", data_root=tmp_path / "data").backbone
    assert calls[0]["pretrained"] == "openai"
    assert calls[0]["force_quick_gelu"] is True  # set before open_clip compares it with the tag: no false warning
    assert backbone.activation == "quick_gelu" and backbone.quick_gelu
    assert isinstance(backbone.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(backbone.model.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_activation_follows_the_weights():
    assert resolve_quick_gelu("ViT-B-16", "openai") is True  # OpenAI trained with QuickGELU
    assert resolve_quick_gelu("ViT-B-16", "laion2b_s34b_b88k") is False
    assert resolve_quick_gelu("ViT-B-16-quickgelu", "openai") is True
    assert resolve_quick_gelu("vlpt-starter-vit", "vlpt-starter") is False
    assert resolve_quick_gelu("vlpt-starter-vit", None) is False
    assert resolve_quick_gelu("vlpt-starter-vit", None, stated=True) is True  # random weights: the user's choice
    # a tag silent on the activation leaves it to the architecture's config
    assert "quick_gelu" not in open_clip.get_pretrained_cfg("roberta-ViT-B-32", "laion2b_s12b_b32k")
    assert resolve_quick_gelu("roberta-ViT-B-32", "laion2b_s12b_b32k") is True
    with pytest.raises(ConfigError, match="contradicts the pretrained tag 'openai'"):
        resolve_quick_gelu("ViT-B-16", "openai", stated=False)
    with pytest.raises(ConfigError, match="contradicts the architecture vlpt-starter-vit"):
        resolve_quick_gelu("vlpt-starter-vit", "vlpt-starter", stated=True)


def test_a_checkpoint_of_unknown_activation_is_refused_unless_stated(tmp_path, tiny_backbone):
    path = tmp_path / "mine.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    with pytest.raises(ConfigError, match=f"checkpoint {path}: its activation cannot be known.*quick_gelu: true"):
        ClipBackbone("vlpt-starter-vit", pretrained=str(path))
    quick = ClipBackbone("vlpt-starter-vit", pretrained=str(path), quick_gelu=True)
    plain = ClipBackbone("vlpt-starter-vit", pretrained=str(path), quick_gelu=False)
    assert (quick.activation, plain.activation) == ("quick_gelu", "gelu")
    assert quick.describe() == f"vlpt-starter-vit@{path}+quickgelu"
    assert ClipBackbone("vlpt-starter-vit", "vlpt-starter", quick_gelu=False).describe() == \
        "vlpt-starter-vit@vlpt-starter"  # stating what the weights imply changes no identity
    images = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(quick.encode_image(images), plain.encode_image(images))
    assert torch.equal(plain.encode_image(images), tiny_backbone.encode_image(images))


def test_a_checkpoint_states_its_activation_in_its_metadata(tmp_path, tiny_backbone):
    path = tmp_path / "mine.safetensors"
    state = {k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}
    save_file(state, str(path), metadata={"quick_gelu": "true"})
    assert ClipBackbone("vlpt-starter-vit", pretrained=str(path)).activation == "quick_gelu"
    with pytest.raises(ConfigError, match="contradicts the checkpoint"):
        ClipBackbone("vlpt-starter-vit", pretrained=str(path), quick_gelu=False)
    save_file(state, str(path), metadata={"quick_gelu": "yes"})
    with pytest.raises(CheckpointError, match="metadata quick_gelu = 'yes', expected true or false"):
        ClipBackbone("vlpt-starter-vit", pretrained=str(path))
    with pytest.raises(CheckpointError, match="is not a file"):
        ClipBackbone("vlpt-starter-vit", pretrained=str(tmp_path))


def test_backbone_properties_cover_what_methods_need(tmp_path, tiny_backbone):
    """Methods ask the backbone (device, ViT patches, embedding width) instead of reaching into open_clip; a
    text projection with a bias (an nn.Linear in open_clip) has a width too."""
    import json

    assert tiny_backbone.device == torch.device("cpu") and tiny_backbone.is_vit and tiny_backbone.patch_size == 4
    config = json.loads((MODEL_CONFIG_DIR / "vlpt-starter-vit.json").read_text())
    config["embed_dim"], config["text_cfg"]["proj_bias"] = 64, True
    (tmp_path / "vlpt-test-projbias.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    biased = ClipBackbone("vlpt-test-projbias", None)
    assert isinstance(biased.model.text_projection, torch.nn.Linear) and biased.embed_dim == 64
    tokens = biased.tokenize(["a photo of a dog."])
    embedded = biased.encode_text_embeds(biased.embed_tokens(tokens), biased.eot_positions(tokens))
    assert embedded.shape == (1, 64) and torch.allclose(embedded, biased.encode_text(tokens), atol=1e-6)
