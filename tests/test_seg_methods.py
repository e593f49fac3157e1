"""Segmentation models and prompt methods: equivalence with CLIPSeg, prompts where they claim, learning."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from vlpt.backbone import ClipBackbone
from vlpt.errors import CheckpointError, ConfigError, DatasetError
from vlpt.seg.evaluate import evaluate_segmenter
from vlpt.registry import SEG_METHODS
from vlpt.seg.data import SegmentationDataset
from vlpt.seg.datasets import load_seg_dataset
from vlpt.protocols.segmentation import seg_data
from vlpt.seg.data import SegEvalSet
from vlpt.seg.vlsm import ClipSegModel, VLSMSpec, build_vlsm, default_extract_layers

TRAINED = [name for name in SEG_METHODS.names() if SEG_METHODS.get(name).trains]
CLASSES = ["background", "circle", "square"]
TEMPLATES = ["a photo of a {}."]


@pytest.fixture(scope="module")
def clipseg():
    return ClipSegModel(VLSMSpec(kind="clipseg", model="tiny-random"))


@pytest.fixture(scope="module")
def clip_decoder(tiny_backbone):
    return build_vlsm(VLSMSpec(), tiny_backbone)


def _config(cls, **params):
    fields = cls.Config.__dataclass_fields__
    return cls.Config(**{k: v for k, v in params.items() if k in fields})


def _batch(vlsm, n_classes, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = vlsm.image_size
    images = torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.randint(0, max(2, n_classes), (batch, size, size), generator=generator)
    return images, masks


def test_clipseg_towers_and_decoder_equal_transformers_forward(clipseg):
    """The prompt seam reimplements CLIPSeg's forward; without prompts it must be CLIPSeg exactly."""
    tokens = clipseg.tokenize(["a photo of a polyp.", "cat"])
    text = clipseg.encode_text_embeds(clipseg.embed_tokens(tokens), clipseg.eot_positions(tokens))
    reference = clipseg.model.clip.get_text_features(input_ids=tokens)
    assert torch.allclose(text, getattr(reference, "pooler_output", reference), atol=1e-5)
    images = torch.randn(2, 3, 64, 64)
    activations, pooled = clipseg.image_activations(images, pooled=True)
    image_reference = clipseg.model.clip.get_image_features(pixel_values=images)
    assert torch.allclose(pooled, getattr(image_reference, "pooler_output", image_reference), atol=1e-5)
    logits = clipseg.decode(clipseg.model.decoder, activations, text[:1])
    expected = clipseg.model(pixel_values=images, conditional_embeddings=text[:1].expand(2, -1)).logits
    assert logits.shape == (2, 1, 64, 64)
    assert torch.allclose(logits[:, 0], expected, atol=1e-5)


def test_clipseg_images_are_normalised_as_its_processor_does(clipseg):
    assert clipseg.mean == (0.485, 0.456, 0.406) and clipseg.std == (0.229, 0.224, 0.225)  # ImageNet's


def test_model_identity_holds_every_setting_and_foreign_settings_are_refused(tmp_path):
    weights = tmp_path / "decoder.pt"
    torch.save({"x": torch.zeros(1)}, weights)
    plain, other = VLSMSpec(decoder_from=str(weights)).describe("b"), VLSMSpec().describe("b")
    torch.save({"x": torch.ones(1)}, weights)
    assert plain != other and VLSMSpec(decoder_from=str(weights)).describe("b") != plain  # by content
    assert "96px" in VLSMSpec(kind="clipseg", model="tiny-random", image_size=96).describe("b")
    with pytest.raises(ValueError, match="reduce_dim do\\(es\\) not apply to kind clipseg"):
        VLSMSpec(kind="clipseg", model="tiny-random", reduce_dim=32)
    with pytest.raises(ValueError, match="revision"):
        VLSMSpec(revision="main")
    with pytest.raises(ConfigError, match="does not exist"):
        VLSMSpec(decoder_from=str(tmp_path / "missing.pt")).describe("b")


def test_prompts_the_decoder_never_reads_and_a_trained_zero_shot_are_refused(tiny_backbone):
    cls = SEG_METHODS.get("seg_vpt")
    shallow_taps = build_vlsm(VLSMSpec(extract_layers=[1, 2]), tiny_backbone)
    cls(shallow_taps, CLASSES, TEMPLATES, cls.Config(prompt_depth=3, train_decoder=True))
    with pytest.raises(ConfigError, match="layer 3 would never reach the decoder"):
        cls(shallow_taps, CLASSES, TEMPLATES, cls.Config(prompt_depth=4, train_decoder=True))
    with pytest.raises(ValueError, match="seg_zeroshot trains nothing"):
        SEG_METHODS.get("seg_zeroshot").Config(train_decoder=True)


def test_decoder_reads_clipseg_layers_scaled_to_the_tower():
    assert default_extract_layers(12) == [3, 6, 9]  # CLIPSeg's
    assert default_extract_layers(4) == [1, 2, 3]


def test_every_image_is_decoded_for_every_class(clip_decoder):
    images, _ = _batch(clip_decoder, 3, batch=2)
    activations, _ = clip_decoder.image_activations(images)
    texts = clip_decoder.encode_texts(["a circle", "a square", "a star"])
    decoder = clip_decoder.new_decoder()
    together = clip_decoder.decode(decoder, activations, texts)
    alone = clip_decoder.decode(decoder, [a[1:] for a in activations], texts[2:])
    assert together.shape == (2, 3, 32, 32)
    assert torch.allclose(together[1, 2], alone[0, 0], atol=1e-5)


def test_reducing_each_images_tokens_once_equals_decoding_every_pairs_copy(clip_decoder):
    """The decoder reduces an image's tokens once and repeats them for its classes: the logits and gradients of
    decoding explicitly repeated (image, class) pairs, to float rounding."""
    images, _ = _batch(clip_decoder, 3, batch=2)
    activations, _ = clip_decoder.image_activations(images)
    texts = clip_decoder.encode_texts(["a circle", "a square", "a star"])
    decoder = clip_decoder.new_decoder()
    results = []
    for paired in (False, True):
        tokens = [a.detach().clone().requires_grad_(True) for a in activations]
        decoder.zero_grad()
        inputs = [t.repeat_interleave(3, dim=0) for t in tokens] if paired else tokens
        logits = decoder(inputs, texts.repeat(2, 1))
        (logits.square().mean()).backward()
        results.append((logits, [t.grad for t in tokens], [p.grad.clone() for p in decoder.parameters()]))
    (ours, token_grads, weight_grads), (pairs, pair_token_grads, pair_weight_grads) = results
    assert torch.allclose(ours, pairs, atol=1e-6)
    for a, b in zip(token_grads + weight_grads, pair_token_grads + pair_weight_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in token_grads)


@pytest.mark.parametrize("kind", ["clip_decoder", "clipseg"])
@pytest.mark.parametrize("name", TRAINED)
def test_every_segmentation_method_trains_checkpoints_itself_and_leaves_the_model_alone(
        name, kind, clip_decoder, clipseg, tmp_path):
    vlsm = clip_decoder if kind == "clip_decoder" else clipseg
    # CLIPSeg's trained decoder stays frozen, as in TuneVLSeg (seg_decoder trains nothing else)
    train_decoder = kind == "clip_decoder" or name == "seg_decoder"
    cls = SEG_METHODS.get(name)
    torch.manual_seed(0)
    frozen_before = {k: v.clone() for k, v in vlsm.state_dict().items()}
    method = cls(vlsm, CLASSES, TEMPLATES, _config(cls, batch_size=2, train_decoder=train_decoder, prompt_depth=2,
                                                   heads=4))
    own_before = {k: v.clone() for k, v in method.state_dict().items()}
    images, masks = _batch(vlsm, len(CLASSES), batch=4)
    loader = DataLoader(list(zip(images, masks)), batch_size=2)
    L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(method, train_dataloaders=loader)

    assert all(torch.equal(frozen_before[k], v) for k, v in vlsm.state_dict().items()), "the VLSM changed"
    own_after = method.state_dict()
    learned = [k for k in own_after if not torch.equal(own_before[k], own_after[k])]
    assert learned, "nothing was learned"
    if name != "seg_decoder":  # the prompts themselves learn, not only a trained decoder
        assert any(not k.startswith("decoder.") for k in learned), learned
    assert any(k.startswith("decoder.") for k in own_after) == train_decoder  # a frozen decoder is not saved
    path = method.save_checkpoint(tmp_path / f"{name}.pt")
    fresh = cls(vlsm, CLASSES, TEMPLATES, method.config)
    fresh.load_checkpoint(path)
    method.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh.logits(images), method.logits(images), atol=1e-5)


def _block_inputs(blocks):
    """Record the hidden states each block receives."""
    seen: dict[int, torch.Tensor] = {}
    handles = [block.register_forward_pre_hook(lambda module, args, i=i: seen.__setitem__(i, args[0].detach()))
               for i, block in enumerate(blocks)]
    return seen, handles


def _towers(vlsm):
    if isinstance(vlsm, ClipSegModel):
        clip = vlsm.model.clip
        return clip.text_model.encoder.layers, clip.vision_model.encoder.layers
    model = vlsm.backbone.model
    return model.transformer.resblocks, model.visual.transformer.resblocks


def _patches(vlsm) -> int:
    patch = vlsm.model.config.vision_config.patch_size if isinstance(vlsm, ClipSegModel) else vlsm.patch_size
    return (vlsm.image_size // patch) ** 2


def _layer1_text_prompt(method, name):
    if name == "seg_shared_attention":
        return method.split_prompts()[0][1]
    if name == "seg_shared_separate":
        return method.to_text[1](method.shared[1])
    return method.text_prompts()[1]  # seg_coop, seg_maple


@pytest.mark.parametrize("kind", ["clip_decoder", "clipseg"])
@pytest.mark.parametrize("name,text,vision", [
    ("seg_coop", True, False), ("seg_vpt", False, True), ("seg_maple", True, True),
    ("seg_shared_separate", True, True), ("seg_shared_attention", True, True), ("seg_decoder", False, False),
])
def test_prompts_reach_exactly_the_layers_they_claim(name, text, vision, kind, clip_decoder, clipseg):
    """With depth 2, block 1 of a prompted tower receives the method's own layer-1 prompt tokens right
    after the start/class token, and block 2 no longer does; an unprompted tower gets no extra tokens
    (image) or exactly the hand-written prompt's embedding (text)."""
    vlsm = clip_decoder if kind == "clip_decoder" else clipseg
    cls = SEG_METHODS.get(name)
    torch.manual_seed(0)
    method = cls(vlsm, CLASSES, TEMPLATES, _config(cls, prompt_depth=2, train_decoder=True, heads=4)).eval()
    text_blocks, vision_blocks = _towers(vlsm)
    text_seen, text_handles = _block_inputs(text_blocks)
    vision_seen, vision_handles = _block_inputs(vision_blocks)
    images, _ = _batch(vlsm, 3, batch=1)
    with torch.no_grad():
        method.logits(images)
        vision_prompts = method.vision_prompts()
        text_prompt = _layer1_text_prompt(method, name) if text else None
        class_embeddings = method.class_embeddings(None)
    for handle in text_handles + vision_handles:
        handle.remove()
    lengths = {seen.shape[1] for seen in vision_seen.values()}
    if vision:
        assert set(vision_prompts) == {0, 1}
        n = len(vision_prompts[1])
        assert torch.allclose(vision_seen[1][0, 1:1 + n], vision_prompts[1], atol=1e-6)
        assert not torch.allclose(vision_seen[2][0, 1:1 + n], vision_prompts[1], atol=1e-3)
        assert lengths == {1 + _patches(vlsm) + n}  # inserted at layer 0, replaced at layer 1, kept after
    else:
        assert vision_prompts == {} and lengths == {1 + _patches(vlsm)}
    if text:
        n = len(text_prompt)
        assert torch.allclose(text_seen[1][:, 1:1 + n], text_prompt.expand(len(CLASSES), -1, -1), atol=1e-6)
        assert not torch.allclose(text_seen[2][0, 1:1 + n], text_prompt, atol=1e-3)
    else:
        expected = vlsm.encode_texts([TEMPLATES[0].format(c) for c in CLASSES])
        assert torch.allclose(class_embeddings, expected, atol=1e-6)


def test_cocoop_conditions_each_image_on_its_own_feature(clip_decoder):
    cls = SEG_METHODS.get("seg_cocoop")
    torch.manual_seed(0)
    method = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(train_decoder=True)).eval()
    images, _ = _batch(clip_decoder, 3, batch=2)
    _, features = clip_decoder.image_activations(images, pooled=True)
    conditioned = method.class_embeddings(features)
    assert conditioned.shape == (2, 3, clip_decoder.embed_dim)
    assert not torch.allclose(conditioned[0], conditioned[1])
    with torch.no_grad():  # the batch decodes each image with its own prompts
        alone = method.logits(images[1:])
        assert torch.allclose(method.logits(images)[1:], alone, atol=1e-5)


def test_binary_prediction_thresholds_the_one_class_and_multiclass_takes_the_argmax(clip_decoder):
    torch.manual_seed(0)
    binary = SEG_METHODS.get("seg_decoder")(clip_decoder, ["polyp"], TEMPLATES)
    images, _ = _batch(clip_decoder, 1, batch=2)
    with torch.no_grad():
        logits = binary.logits(images)
        assert logits.shape == (2, 1, 32, 32)
        assert torch.equal(binary.predict(images), (logits[:, 0] > 0).long())
        multi = SEG_METHODS.get("seg_decoder")(clip_decoder, CLASSES, TEMPLATES)
        assert torch.equal(multi.predict(images), multi.logits(images).argmax(1))
    with pytest.raises(ConfigError, match="binary"):
        binary.set_classnames(CLASSES)


def test_a_random_decoder_cannot_stay_frozen_and_foreign_decoder_weights_are_rejected(tiny_backbone, tmp_path):
    with pytest.raises(ConfigError, match="random decoder"):
        SEG_METHODS.get("seg_coop")(build_vlsm(VLSMSpec(), tiny_backbone), CLASSES, TEMPLATES)
    with pytest.raises(ConfigError, match="random decoder"):
        SEG_METHODS.get("seg_zeroshot")(build_vlsm(VLSMSpec(), tiny_backbone), CLASSES, TEMPLATES)
    torch.save({"film_mul.weight": torch.zeros(3, 3)}, tmp_path / "decoder.pt")
    vlsm = build_vlsm(VLSMSpec(decoder_from=str(tmp_path / "decoder.pt")), tiny_backbone)
    with pytest.raises(CheckpointError, match="decoder.pt"):
        vlsm.new_decoder()
    with pytest.raises(ValueError, match="needs `model`"):
        VLSMSpec(kind="clipseg")


def _tiny_splits(tmp_path):
    return load_seg_dataset("starter_seg_shapes", tmp_path)


def test_few_shot_images_are_seeded_and_targets_must_be_of_the_same_kind(tmp_path, shared_data):
    shapes = _tiny_splits(tmp_path)
    one, again, other = (seg_data(shapes, 16, seed) for seed in (1, 1, 2))
    assert len(one.train) == 16 and one.train == again.train and one.train != other.train
    assert set(one.train) <= set(shapes.train)
    assert seg_data(shapes, 0, 1).train == []  # a method that trains nothing
    kvasir, clinic = load_seg_dataset("kvasir_seg", shared_data), load_seg_dataset("cvc_clinicdb", shared_data)
    cross = seg_data(kvasir, 8, 1, [clinic])
    assert [e.name for e in cross.eval_sets] == ["test", "cvc_clinicdb"]
    with pytest.raises(DatasetError, match="binary"):
        seg_data(shapes, 8, 1, [clinic])


def _dice(method, splits, samples, size_args):
    eval_set = SegEvalSet("test", samples, splits)
    loader = DataLoader(SegmentationDataset(samples, splits, *size_args), batch_size=50)
    return evaluate_segmenter(method.eval(), loader, eval_set, torch.device("cpu"))["dice"]


def test_short_training_on_the_starter_task_raises_dice_well_above_the_untrained_model(tmp_path):
    backbone = ClipBackbone("vlpt-starter-vit", "vlpt-starter")
    vlsm = build_vlsm(VLSMSpec(), backbone)
    splits = _tiny_splits(tmp_path)
    cls = SEG_METHODS.get("seg_coop")
    L.seed_everything(1, verbose=False)
    method = cls(vlsm, splits.classnames, splits.templates, cls.Config(lr=2e-3, train_decoder=True, epochs=4))
    size_args = (vlsm.image_size, vlsm.mean, vlsm.std)
    untrained = _dice(method, splits, splits.test[:100], size_args)
    loader = DataLoader(SegmentationDataset(splits.train, splits, *size_args, augment="flip"), batch_size=16,
                        shuffle=True)
    method.max_epochs = 4
    L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(method, train_dataloaders=loader)
    trained = _dice(method, splits, splits.test[:100], size_args)
    assert untrained < 25 and trained > untrained + 40, (untrained, trained)


# ---- TuneVLSeg's defaults (naamiinepal/tunevlseg configs/model/*clipseg.yaml, scripts/schedule_*.sh) ----------
def test_config_files_hold_tunevlsegs_defaults():
    from vlpt.eval.suite import load_method_config

    for name in ("seg_coop", "seg_cocoop", "seg_maple", "seg_vpt", "seg_shared_separate", "seg_shared_attention"):
        resolved = load_method_config(name, {}, "test")
        cfg = resolved.config
        assert cfg == resolved.cls.Config(), name  # the config file holds the dataclass defaults
        assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.train_decoder) == (
            "adamw", 2e-4, 0.0, 32, False), name
        assert (cfg.dice_weight, cfg.ce_weight, cfg.epochs) == (1.0, 0.2, 20), name
    assert load_method_config("seg_coop", {}, "test").config.ctx_init == "a photo of a"
    assert load_method_config("seg_maple", {}, "test").config.ctx_init == "a photo of a"
    assert not load_method_config("seg_shared_separate", {}, "test").config.unified_projection
    assert not load_method_config("seg_shared_attention", {}, "test").config.attend_across_tokens


def test_coop_context_starts_as_a_photo_of_a(clip_decoder):
    method = SEG_METHODS.get("seg_coop")(clip_decoder, CLASSES, TEMPLATES, SEG_METHODS.get("seg_coop").Config(
        train_decoder=True))
    tokens = clip_decoder.tokenize(["a photo of a"])
    expected = clip_decoder.embed_tokens(tokens)[0, 1:5]
    assert torch.allclose(method.context.ctx, expected, atol=1e-6)


def test_maple_couples_text_to_vision_through_tunevlsegs_projector(clip_decoder):
    cls = SEG_METHODS.get("seg_maple")
    torch.manual_seed(0)
    method = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(prompt_depth=2, train_decoder=True))
    text_width, vision_width = clip_decoder.text_width, clip_decoder.vision_width
    assert len(method.couplings) == 2 and method.couplings[0] is not method.couplings[1]
    first, relu, second, norm = method.couplings[0]
    assert (first.in_features, first.out_features, second.in_features, second.out_features) == (
        text_width, 64, 64, vision_width)
    assert isinstance(relu, torch.nn.ReLU) and second.bias is None
    assert isinstance(norm, torch.nn.LayerNorm) and norm.bias is not None
    with torch.no_grad():
        prompts = method.vision_prompts()
        assert torch.allclose(prompts[0], method.couplings[0](method.context.ctx), atol=1e-6)
        assert torch.allclose(prompts[1], method.couplings[1](method.text_prompts()[1]), atol=1e-6)
    linear = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(coupling="linear", train_decoder=True))
    assert isinstance(linear.couplings[0], torch.nn.Linear)
    with pytest.raises(ConfigError, match="unknown coupling"):
        cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(coupling="mlp2", train_decoder=True))


def test_cocoop_meta_net_is_tunevlsegs_on_the_raw_image_feature(clip_decoder):
    cls = SEG_METHODS.get("seg_cocoop")
    torch.manual_seed(0)
    method = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(train_decoder=True)).eval()
    first, _, second, norm = method.meta_net
    assert (first.in_features, first.out_features, second.out_features) == (
        clip_decoder.embed_dim, 64, clip_decoder.text_width)
    assert second.bias is None and norm.bias is None
    images, _ = _batch(clip_decoder, 3, batch=2)
    _, features = clip_decoder.image_activations(images, pooled=True)
    with torch.no_grad():  # the feature is not normalised: its scale reaches the context
        assert not torch.allclose(method.class_embeddings(features), method.class_embeddings(3 * features), atol=1e-4)
        own = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(meta_net="cocoop", train_decoder=True)).eval()
        assert torch.allclose(own.class_embeddings(features), own.class_embeddings(3 * features), atol=1e-5)


def test_shared_separate_projects_each_layer_with_its_own_maps_starting_equal(clip_decoder):
    cls = SEG_METHODS.get("seg_shared_separate")
    method = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(prompt_depth=3, train_decoder=True))
    for maps in (method.to_text, method.to_vision):
        assert len({id(m) for m in maps}) == 3
        assert all(torch.equal(m.weight, maps[0].weight) for m in maps)  # TuneVLSeg deep-copies one layer
    unified = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(prompt_depth=3, unified_projection=True,
                                                               train_decoder=True))
    assert len({id(m) for m in unified.to_text}) == 1


def test_shared_attention_vectors_attend_only_to_themselves_unless_asked(clip_decoder):
    cls = SEG_METHODS.get("seg_shared_attention")
    for across in (False, True):
        torch.manual_seed(0)
        method = cls(clip_decoder, CLASSES, TEMPLATES, cls.Config(heads=4, attend_across_tokens=across,
                                                                  train_decoder=True)).eval()
        with torch.no_grad():
            text, vision = method.split_prompts()
            method.shared[0, 2:].add_(torch.randn_like(method.shared[0, 2:]))
            text_after, vision_after = method.split_prompts()
            same = torch.allclose(text_after[0][:2], text[0][:2], atol=1e-6) and torch.allclose(
                vision_after[0][:2], vision[0][:2], atol=1e-6)
        assert same != across


def test_segmentation_methods_have_their_own_registry_and_share_the_names():
    from vlpt.registry import METHODS, method_class, method_names, register_method

    assert SEG_METHODS.names() and not set(SEG_METHODS.names()) & set(METHODS.names())
    assert method_names() == sorted([*METHODS.names(), *SEG_METHODS.names()])
    for name in SEG_METHODS.names():
        cls = method_class(name)
        assert cls is SEG_METHODS.get(name) and cls.task == "segmentation"
        assert cls.__module__ == f"vlpt.seg.methods.{name}"
    with pytest.raises(ConfigError, match="register_seg_method"):
        register_method("my_seg")(type("MySeg", (SEG_METHODS.get("seg_coop"),), {}))


def test_the_backbone_and_both_segmentation_models_are_text_towers(tiny_backbone, clip_decoder, clipseg):
    from vlpt.backbone.text import TextTower

    assert all(isinstance(tower, TextTower) for tower in (tiny_backbone, clip_decoder, clipseg))
    texts = ["a photo of a circle.", "square"]
    assert torch.equal(clip_decoder.tokenize(texts), tiny_backbone.tokenize(texts))
    assert torch.equal(clip_decoder.encode_texts(texts), tiny_backbone.encode_texts(texts))  # the backbone's own
    assert (clip_decoder.dtype, clip_decoder.device, clip_decoder.embed_dim) == \
        (tiny_backbone.dtype, tiny_backbone.device, tiny_backbone.embed_dim)
