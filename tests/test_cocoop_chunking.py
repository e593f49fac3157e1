"""CoCoOp's memory-budgeted chunking: how many images' prompts share a text-encoder pass."""
from __future__ import annotations

import math

import pytest
import torch

from vlpt.errors import ConfigError
from vlpt.eval.suite import load_method_config
from vlpt.methods.cocoop import MIB, activation_bytes_per_prompt
from vlpt.registry import METHODS

CLASSNAMES = ["red", "green square", "dark blue square"]  # different token counts
TEMPLATES = ["a photo of a {}."]
BATCH = 6


def _cocoop(backbone, **config):
    cls = METHODS.get("cocoop")
    torch.manual_seed(0)
    return cls(backbone, CLASSNAMES, TEMPLATES, cls.Config(**config))


def _per_image_mb(method, grad: bool = True) -> float:
    return method.activation_bytes_per_image(len(CLASSNAMES), grad=grad) / MIB


@pytest.fixture
def text_passes(tiny_backbone, monkeypatch):
    """Counts the text-encoder passes and the sequences in each (the backbone's method is wrapped)."""
    sizes: list[int] = []
    original = tiny_backbone.encode_text_embeds

    def counting(embeds, *args, **kwargs):
        sizes.append(embeds.shape[0])
        return original(embeds, *args, **kwargs)

    monkeypatch.setattr(tiny_backbone, "encode_text_embeds", counting)
    return sizes


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(BATCH, 3, 32, 32), torch.tensor([0, 1, 2, 1, 0, 2])


def _logits_and_gradients(method, images, labels, per_image: bool = False):
    if per_image:
        logits = torch.cat([method.logits(images[i:i + 1]) for i in range(len(images))])
    else:
        logits = method.logits(images)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def test_logits_and_gradients_do_not_depend_on_the_chunk_size(tiny_backbone, batch, text_passes):
    """A budget too small for one image (1 image per pass), one for 2 images, and one for the whole
    batch give the same logits and gradients as the paper's per-image loop."""
    images, labels = batch
    per_image = _per_image_mb(_cocoop(tiny_backbone))
    results = {}
    for name, budget, chunk in [("tiny", per_image / 1000, 1), ("two", 2.5 * per_image, 2), ("huge", 1e9, BATCH)]:
        method = _cocoop(tiny_backbone, chunk_memory_mb=budget)
        assert min(method.images_per_chunk_for(len(CLASSNAMES)), BATCH) == chunk, name
        text_passes.clear()
        results[name] = _logits_and_gradients(method, images, labels)
        passes = [chunk * len(CLASSNAMES)] * math.ceil(BATCH / chunk)
        # more than one pass: each is recomputed in the backward pass
        assert text_passes == (passes * 2 if len(passes) > 1 else passes), name
    loop_logits, loop_grads = _logits_and_gradients(_cocoop(tiny_backbone), images, labels, per_image=True)
    assert loop_grads and all(g.abs().sum() > 0 for g in loop_grads.values())
    for name, (logits, grads) in results.items():
        assert torch.allclose(logits, loop_logits, atol=1e-5), name
        assert grads.keys() == loop_grads.keys(), name
        for param in grads:
            assert torch.allclose(grads[param], loop_grads[param], atol=1e-6), (name, param)


def _bytes_kept_for_backward(method, images) -> int:
    """Bytes of the tensors autograd keeps from a training forward pass (parameters and buffers excluded)."""
    frozen = {t.untyped_storage().data_ptr() for t in [*method.parameters(), *method.buffers()]}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in frozen:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        method.logits(images)
    return sum(kept.values())


def test_in_training_the_budget_bounds_the_activations_of_the_whole_batch(tiny_backbone, batch):
    """Chunks of a training batch are recomputed in the backward pass, so what the forward pass keeps
    stays within the budget; within one pass nothing is recomputed and all is kept."""
    images = batch[0]
    per_image = _per_image_mb(_cocoop(tiny_backbone))
    whole = _bytes_kept_for_backward(_cocoop(tiny_backbone, chunk_memory_mb=1e9), images) / MIB
    assert 0.6 * BATCH * per_image <= whole <= BATCH * per_image  # the estimate is an upper bound
    budget = 2.5 * per_image
    chunked = _bytes_kept_for_backward(_cocoop(tiny_backbone, chunk_memory_mb=budget), images) / MIB
    assert chunked <= budget / 2, (chunked, budget)


@pytest.mark.parametrize("images_per_pass", [6, 4, 3, 2, 1])
def test_the_chunk_size_is_proportional_to_the_budget(tiny_backbone, batch, text_passes, images_per_pass):
    """``k + 0.5`` images' worth of budget gives chunks of k images and ceil(batch / k) passes."""
    per_image = _per_image_mb(_cocoop(tiny_backbone))
    method = _cocoop(tiny_backbone, chunk_memory_mb=(images_per_pass + 0.5) * per_image)
    assert method.images_per_chunk_for(len(CLASSNAMES)) == images_per_pass
    method.logits(batch[0])
    assert len(text_passes) == math.ceil(BATCH / images_per_pass)
    assert max(text_passes) == images_per_pass * len(CLASSNAMES)


def test_halving_the_budget_halves_the_chunk_and_never_goes_below_one_image(tiny_backbone):
    method = _cocoop(tiny_backbone)
    n_classes = 50
    per_image_mb = method.activation_bytes_per_image(n_classes, grad=True) / MIB
    chunks = []
    for images in (64, 32, 16, 8, 4, 2, 1, 0.5, 0.01):
        method.config.chunk_memory_mb = images * per_image_mb * 1.001
        chunks.append(method.images_per_chunk_for(n_classes, grad=True))
    assert chunks == [64, 32, 16, 8, 4, 2, 1, 1, 1]
    # more classes cost more per image: the same budget takes proportionally fewer images
    method.config.chunk_memory_mb = 40.5 * per_image_mb
    assert method.images_per_chunk_for(n_classes, grad=True) == 40
    assert method.images_per_chunk_for(2 * n_classes, grad=True) == 20
    assert method.images_per_chunk_for(4 * n_classes, grad=True) == 10


def test_the_estimate_covers_what_autograd_keeps(tiny_backbone, deep_backbone):
    """The training estimate is an upper bound of the activations autograd saves, and a close one."""
    for backbone in (tiny_backbone, deep_backbone):
        n = 4
        embeds = torch.randn(n, backbone.context_length, backbone.text_width, requires_grad=True)
        frozen = {t.untyped_storage().data_ptr() for t in [*backbone.parameters(), *backbone.buffers()]}
        saved: dict[int, int] = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in frozen:
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            backbone.encode_text_embeds(embeds, torch.full((n,), 5), normalize=True)
        length = backbone.text_sequence_length(torch.full((n,), 5), backbone.context_length)  # the tower's cut
        estimate = n * activation_bytes_per_prompt(backbone, grad=True, length=length)
        measured = sum(saved.values()) + embeds.numel() * embeds.element_size()  # the prompts themselves
        assert measured <= estimate <= 1.5 * measured, (backbone.model_name, measured, estimate)


def test_evaluation_without_gradients_takes_larger_chunks(tiny_backbone, batch, text_passes):
    """Without gradients only one block's activations are alive, so the same budget holds more images."""
    method = _cocoop(tiny_backbone)
    train_cost, eval_cost = _per_image_mb(method, grad=True), _per_image_mb(method, grad=False)
    assert eval_cost * tiny_backbone.text_layers / 2 < train_cost  # depth no longer multiplies the cost
    method.config.chunk_memory_mb = BATCH * eval_cost * 1.01  # the whole batch without gradients, 1 image with
    train_chunk = method.images_per_chunk_for(len(CLASSNAMES))
    with torch.no_grad():
        eval_chunk = method.images_per_chunk_for(len(CLASSNAMES))
        eval_logits = method.logits(batch[0])
    assert (train_chunk, eval_chunk) == (1, BATCH)
    assert text_passes == [BATCH * len(CLASSNAMES)]
    text_passes.clear()
    train_logits = method.logits(batch[0])
    assert text_passes == [len(CLASSNAMES)] * BATCH
    assert torch.allclose(train_logits.detach(), eval_logits, atol=1e-5)
    with torch.inference_mode():  # Lightning evaluates in inference mode
        assert method.images_per_chunk_for(len(CLASSNAMES)) == BATCH
    assert method.images_per_chunk_for(len(CLASSNAMES), grad=False) == BATCH


def test_an_explicit_images_per_chunk_overrides_the_budget(tiny_backbone, batch, text_passes):
    method = _cocoop(tiny_backbone, chunk_memory_mb=1e9, images_per_chunk=4)
    assert method.images_per_chunk_for(len(CLASSNAMES)) == 4
    with torch.no_grad():
        assert method.images_per_chunk_for(len(CLASSNAMES)) == 4
        method.logits(batch[0])
    assert text_passes == [4 * len(CLASSNAMES), 2 * len(CLASSNAMES)]


def test_the_default_budget_takes_several_vit_b16_images_of_ten_classes():
    """2048 MiB: about 9 images of 10 classes per pass in ViT-B/16 fp32 training (the config comment)."""
    from types import SimpleNamespace

    vit_b16_text = SimpleNamespace(text_width=512, context_length=77, text_layers=12, dtype=torch.float32)
    cls = METHODS.get("cocoop")
    assert cls.Config().chunk_memory_mb == 2048
    per_image = 10 * activation_bytes_per_prompt(vit_b16_text, grad=True)
    assert 2048 * MIB // per_image == 9
    assert 2048 * MIB // (10 * activation_bytes_per_prompt(vit_b16_text, grad=False)) > 100


@pytest.mark.parametrize("key, value, message", [
    ("chunk_memory_mb", 0, "chunk_memory_mb must be a positive finite number of MiB, got 0"),
    ("chunk_memory_mb", -5.0, "chunk_memory_mb must be a positive finite number of MiB, got -5.0"),
    ("chunk_memory_mb", float("nan"), "chunk_memory_mb must be a positive finite number of MiB, got nan"),
    ("chunk_memory_mb", float("inf"), "chunk_memory_mb must be a positive finite number of MiB, got inf"),
    ("chunk_memory_mb", "2048", "chunk_memory_mb must be a positive finite number of MiB, got '2048'"),
    ("chunk_memory_mb", True, "chunk_memory_mb must be a positive finite number of MiB, got True"),
    ("images_per_chunk", 0, "images_per_chunk must be an integer of at least 1, or None .* got 0"),
    ("images_per_chunk", -2, "images_per_chunk must be an integer of at least 1, or None .* got -2"),
    ("images_per_chunk", 2.0, "images_per_chunk must be an integer of at least 1, or None .* got 2.0"),
    ("images_per_chunk", False, "images_per_chunk must be an integer of at least 1, or None .* got False"),
])
def test_bad_chunk_settings_raise_config_error(key, value, message):
    with pytest.raises(ConfigError, match=message):
        METHODS.get("cocoop").Config(**{key: value})


def test_bad_chunk_settings_in_a_suite_override_raise_config_error():
    with pytest.raises(ConfigError, match="chunk_memory_mb must be a positive finite number of MiB, got -1.0"):
        load_method_config("cocoop", {"chunk_memory_mb": -1}, "suite.yaml")
    with pytest.raises(ConfigError, match="images_per_chunk"):
        load_method_config("cocoop", {"images_per_chunk": 0}, "suite.yaml")
    config = load_method_config("cocoop", {"chunk_memory_mb": 512, "images_per_chunk": None}, "suite.yaml")
    assert config.config.chunk_memory_mb == 512.0 and config.config.images_per_chunk is None
