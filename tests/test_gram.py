"""GRAM (Li et al., ICCV 2023): the regulated inner step, the bi-level outer step, a toy problem
with a known answer, the image-caption sources, and an end-to-end run on the tiny backbone."""
from __future__ import annotations

import io
import itertools
import tarfile

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vlpt.errors import ConfigError, DatasetError
from vlpt.meta import (
    BilevelMetaLearner,
    CaptionDataset,
    GradientRegulator,
    MetaTask,
    adapt,
    attach_regulator,
    caption_folder,
    caption_loader,
    caption_shards,
    load_caption_domains,
    load_regulator,
    meta_learn_initialization,
    parse_domain_specs,
    regulated_update,
    regulator_path_for,
    run_gram,
    starter_caption_pairs,
)
from vlpt.meta.gram import (
    _CaptionBatch,
    _MethodCall,
    caption_contrastive_loss,
    caption_prompt,
    caption_targets,
    fit_caption,
    named_trainable_parameters,
)


def quadratic(optimum: torch.Tensor):
    return lambda p: 0.5 * ((p["theta"] - optimum) ** 2).sum()


class ZeroRegulator(nn.Module):
    def forward(self, grads):
        return {name: torch.zeros_like(g) for name, g in grads.items()}


# ---- (a) the inner step uses the regulated gradient ------------------------------------------------
def test_zero_regulator_leaves_parameters_unchanged():
    theta = torch.randn(3, 4, requires_grad=True)
    target = torch.randn(3, 4)
    adapted, raw, regulated = regulated_update({"theta": theta}, ((theta - target) ** 2).sum(), ZeroRegulator(), 0.5)
    assert torch.equal(adapted["theta"], theta)
    assert raw["theta"].abs().sum() > 0 and torch.count_nonzero(regulated["theta"]) == 0


def test_inner_step_matches_hand_computation():
    torch.manual_seed(0)
    theta = torch.randn(3, 4, requires_grad=True)
    target, weight = torch.randn(3, 4), torch.rand(3, 4) + 0.5
    regulator = GradientRegulator({"theta": (3, 4)}, hidden=5, init_std=0.5, seed=3)
    lr = 0.3
    adapted, raw, _ = regulated_update({"theta": theta}, (weight * (theta - target) ** 2).sum(), regulator, lr)

    grad = 2 * weight * (theta.detach() - target)  # d/dtheta of sum(w (theta - t)^2)
    assert torch.allclose(raw["theta"], grad, atol=1e-6)
    net = regulator.nets["theta"]
    normalized = grad / grad.pow(2).mean().sqrt()
    hidden = torch.relu(normalized @ net.fc1.weight.T + net.fc1.bias)
    gate = 2.0 * torch.sigmoid(hidden @ net.fc2.weight.T + net.fc2.bias)
    assert not torch.allclose(gate, torch.ones_like(gate), atol=1e-3)  # a real gate, not the identity
    assert torch.allclose(adapted["theta"], theta.detach() - lr * gate * grad, atol=1e-6)
    # differentiable in both theta and the regulator (second order)
    adapted["theta"].sum().backward()
    assert theta.grad is not None and net.fc1.weight.grad is not None


def test_regulator_starts_near_identity_and_checks_widths():
    regulator = GradientRegulator({"a.b": (4, 8)}, hidden=16)
    grad = torch.randn(4, 8)
    assert torch.allclose(regulator.regulate("a.b", grad), grad, rtol=0.05, atol=1e-6)
    assert regulator.regulate("a.b", torch.randn(7, 8)).shape == (7, 8)  # rows share the gate network
    with pytest.raises(ConfigError, match="width 8"):
        regulator.regulate("a.b", torch.randn(4, 5))
    with pytest.raises(ConfigError, match="no entry"):
        regulator.regulate("other", grad)


def test_method_inner_step_is_the_plain_gradient_step(tiny_backbone):
    """Through functional_call: zero regulator -> theta' == theta; identity regulator -> theta minus lr times
    the gradient of the method's own logits."""
    from vlpt.methods.coop import CoOp, CoOpConfig

    method = CoOp(tiny_backbone, ["x"], ["{}"], CoOpConfig(n_ctx=4))
    params = named_trainable_parameters(method)
    assert list(params) == ["context.ctx"]
    images = torch.randn(3, 3, 32, 32)
    captions = ["a red circle", "the digit one", "a red circle"]
    loss_fn = _CaptionBatch(method, _MethodCall(method), images, captions, "image_to_text")

    same, _ = adapt(params, loss_fn, ZeroRegulator(), inner_lr=1.0)
    assert torch.equal(same["context.ctx"], params["context.ctx"])

    stepped, _ = adapt(params, loss_fn, lambda grads: grads, inner_lr=0.7)
    method.set_classnames(["a red circle", "the digit one"], ["{}"])
    loss = F.cross_entropy(method.logits(images), torch.tensor([0, 1, 0]))
    (grad,) = torch.autograd.grad(loss, [method.context.ctx])
    assert torch.allclose(stepped["context.ctx"], method.context.ctx - 0.7 * grad, atol=1e-6)


# ---- (b) one outer step updates the initialization and the regulator -------------------------------
def test_outer_step_changes_initialization_and_regulator():
    theta = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    regulator = GradientRegulator({"theta": (3,)}, hidden=4, seed=1)
    before_theta = theta.detach().clone()
    before_reg = {k: v.clone() for k, v in regulator.state_dict().items()}
    learner = BilevelMetaLearner({"theta": theta}, regulator, inner_lr=0.4, outer_lr=0.01)
    task = MetaTask(quadratic(torch.tensor([1.0, 1.0, 1.0])), quadratic(torch.tensor([-1.0, 0.0, 3.0])))
    stats = learner.step([task])
    assert stats["query_loss"] > 0
    assert not torch.equal(theta.detach(), before_theta)
    for key, value in regulator.state_dict().items():
        assert not torch.equal(value, before_reg[key]), f"regulator tensor {key} did not change"


def test_first_order_still_trains_the_regulator_and_frozen_regulator_stays():
    theta = nn.Parameter(torch.tensor([0.5, -1.0]))
    regulator = GradientRegulator({"theta": (2,)}, hidden=4, seed=1)
    before = {k: v.clone() for k, v in regulator.state_dict().items()}
    task = MetaTask(quadratic(torch.tensor([1.0, 1.0])), quadratic(torch.tensor([-1.0, 0.0])))
    BilevelMetaLearner({"theta": theta}, regulator, 0.4, 0.01, first_order=True).step([task])
    assert all(not torch.equal(v, before[k]) for k, v in regulator.state_dict().items())

    frozen = GradientRegulator({"theta": (2,)}, hidden=4, seed=1)
    BilevelMetaLearner({"theta": theta}, frozen, 0.4, 0.01, learn_regulator=False).step([task])
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())


# ---- (c) a toy problem with a known answer --------------------------------------------------------
def test_maml_on_quadratics_converges_to_mean_of_task_optima():
    """L_d(theta) = |theta - c_d|^2 / 2, support and query from different domains drawn uniformly:
    E[theta' - c_q] = (1 - a) theta + a E[c_s] - E[c_q] = 0 gives theta* = mean(c) exactly."""
    optima = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)) * 2
    theta = nn.Parameter(torch.zeros(2))
    learner = BilevelMetaLearner({"theta": theta}, None, inner_lr=0.3, outer_lr=0.05)
    tasks = [MetaTask(quadratic(optima[s]), quadratic(optima[q])) for s, q in itertools.permutations(range(6), 2)]
    for _ in range(400):
        learner.step(tasks)
    assert torch.allclose(theta.detach(), optima.mean(dim=0), atol=1e-3)


def test_regulator_learns_to_keep_the_direction_shared_across_domains():
    """Coordinate 0 of a task's optimum is shared by its support and query domains; coordinate 1 is
    domain-specific. The best regulated step adapts coordinate 0 fully and ignores coordinate 1, so the
    gate goes to (2, 0) (inner lr 0.5), theta_1 to the mean of the domain values, and the query loss to
    its minimum Var(b) / 2."""
    domain_values = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    theta = nn.Parameter(torch.zeros(2))
    regulator = GradientRegulator({"theta": (2,)}, hidden=8, seed=0)
    learner = BilevelMetaLearner({"theta": theta}, regulator, inner_lr=0.5, outer_lr=0.05, regulator_lr=0.02)
    tasks = [
        MetaTask(quadratic(torch.stack([a, domain_values[s]])), quadratic(torch.stack([a, domain_values[q]])))
        for a in torch.tensor([-2.0, 1.5]) for s, q in itertools.permutations(range(4), 2)
    ]
    for _ in range(300):
        stats = learner.step(tasks)
    assert abs(theta[1].item() - domain_values.mean().item()) < 0.01
    assert stats["query_loss"] == pytest.approx(0.5 * domain_values.var(unbiased=False).item(), abs=0.01)
    with torch.no_grad():
        gate = regulator.gate("theta", theta.detach() - torch.tensor([1.5, 3.0]))
    assert gate[0] > 1.9 and gate[1] < 0.1


# ---- (d) image-caption sources ----------------------------------------------------------------------
def _png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_caption_folder_reads_pairs_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.png").write_bytes(_png_bytes())
    (tmp_path / "b.txt").write_text("  a red\nsquare. ")
    (tmp_path / "sub" / "a.png").write_bytes(_png_bytes((0, 0, 255)))
    (tmp_path / "sub" / "a.txt").write_text("a blue square")
    (tmp_path / "notes.txt").write_text("not a caption")
    pairs = caption_folder(tmp_path, "web")
    assert [(p.caption, p.domain) for p in pairs] == [("a red square.", "web"), ("a blue square", "web")]
    images, captions = next(iter(caption_loader(pairs, lambda im: torch.zeros(3, 4, 4), 2, shuffle=False)))
    assert images.shape == (2, 3, 4, 4) and list(captions) == ["a red square.", "a blue square"]


def test_caption_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        caption_folder(tmp_path / "missing", "web")
    with pytest.raises(DatasetError, match="holds no images"):
        caption_folder(tmp_path, "web")
    (tmp_path / "x.png").write_bytes(_png_bytes())
    with pytest.raises(DatasetError, match=r"x\.png has no caption file x\.txt"):
        caption_folder(tmp_path, "web")
    (tmp_path / "x.txt").write_text("   ")
    with pytest.raises(DatasetError, match=r"x\.txt is empty"):
        caption_folder(tmp_path, "web")
    (tmp_path / "x.txt").write_text("fine")
    (tmp_path / "y.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "y.txt").write_text("broken")
    pairs = caption_folder(tmp_path, "web")  # images decode when loaded
    with pytest.raises(DatasetError, match=r"y\.jpg cannot be decoded"):
        CaptionDataset(pairs)[1]


def test_caption_shards_extract_once(tmp_path):
    shard = _write_tar(tmp_path / "shard-000.tar", {
        "s/0001.png": _png_bytes(), "s/0001.txt": b"a red square",
        "s/0002.png": _png_bytes((0, 255, 0)), "s/0002.txt": "a gr\xfcn square".encode(),
        "s/0002.json": b"{}",
    })
    cache = tmp_path / "cache"
    pairs = caption_shards(shard, "cc", cache_dir=cache)
    assert [p.caption for p in pairs] == ["a red square", "a gr\xfcn square"]
    assert all(p.domain == "cc" and p.path.startswith(str(cache)) for p in pairs)
    image, caption = CaptionDataset(pairs)[1]
    assert image.getpixel((0, 0)) == (0, 255, 0) and caption == "a gr\xfcn square"
    first = sorted(cache.rglob("*"))
    stamp = (cache / next(cache.iterdir()).name / "manifest.json").stat().st_mtime_ns
    assert caption_shards([str(tmp_path / "shard-*.tar")], "cc", cache_dir=cache) == pairs  # glob + cache hit
    assert sorted(cache.rglob("*")) == first
    assert (cache / next(cache.iterdir()).name / "manifest.json").stat().st_mtime_ns == stamp


def test_caption_shard_errors_name_shard_and_member(tmp_path):
    missing = _write_tar(tmp_path / "missing.tar", {"k1.jpg": _png_bytes(), "k2.png": _png_bytes(), "k2.txt": b"x"})
    with pytest.raises(DatasetError, match=r"missing\.tar: image member k1\.jpg has no caption member k1\.txt"):
        caption_shards(missing, "cc", cache_dir=tmp_path / "c")
    corrupt = _write_tar(tmp_path / "corrupt.tar", {"k1.jpg": b"\xff\xd8 not really", "k1.txt": b"a cat"})
    with pytest.raises(DatasetError, match=r"corrupt\.tar: image member k1\.jpg cannot be decoded"):
        caption_shards(corrupt, "cc", cache_dir=tmp_path / "c")
    orphan = _write_tar(tmp_path / "orphan.tar", {"k1.png": _png_bytes(), "k1.txt": b"a", "k9.txt": b"b"})
    with pytest.raises(DatasetError, match=r"orphan\.tar: caption member k9\.txt has no image"):
        caption_shards(orphan, "cc", cache_dir=tmp_path / "c")
    (tmp_path / "junk.tar").write_bytes(b"not a tar file at all")
    with pytest.raises(DatasetError, match=r"junk\.tar cannot be opened"):
        caption_shards(tmp_path / "junk.tar", "cc", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="does not exist"):
        caption_shards(tmp_path / "nope.tar", "cc", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="matches no file"):
        caption_shards(str(tmp_path / "none-*.tar"), "cc", cache_dir=tmp_path / "c")


def test_domain_specs_and_mixed_sources(tmp_path):
    assert parse_domain_specs(["web=/a.tar,/b.tar", "sketch=/s", "web=/c.tar"]) == {
        "web": ["/a.tar", "/b.tar", "/c.tar"], "sketch": ["/s"]}
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_domain_specs(["nodomain"])
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "p.png").write_bytes(_png_bytes())
    (folder / "p.txt").write_text("a photo")
    shard = _write_tar(tmp_path / "s.tar", {"k.png": _png_bytes(), "k.txt": b"a sketch"})
    domains = load_caption_domains({"photos": folder, "sketches": [str(shard)]}, cache_dir=tmp_path / "c")
    captions = {d: [p.caption for p in ps] for d, ps in domains.items()}
    assert captions == {"photos": ["a photo"], "sketches": ["a sketch"]}


def test_starter_caption_pairs_two_domains(tmp_path):
    from vlpt.starter import pretrain, synthetic

    domains = starter_caption_pairs(tmp_path, shapes_per_class=1, digits_limit=12, seed=5)
    assert sorted(domains) == ["digits8", "shapes"]
    assert len(domains["digits8"]) == 12
    assert len(domains["shapes"]) == len(synthetic.SHAPE_CLASSES) - len(synthetic.HELD_OUT_SHAPES)
    allowed = {t.format(c) for t in pretrain.SHAPE_CAPTIONS for c in synthetic.SHAPE_CLASSES
               if c not in synthetic.HELD_OUT_SHAPES}
    assert all(p.caption in allowed for p in domains["shapes"])
    assert all(any(name in p.caption for name in synthetic.DIGIT_NAMES) for p in domains["digits8"])
    assert all(p.path.endswith(".png") for ps in domains.values() for p in ps)
    assert starter_caption_pairs(tmp_path, shapes_per_class=1, digits_limit=12, seed=5) == domains  # reused
    assert caption_folder(tmp_path / "shapes", "shapes") == domains["shapes"]


def test_caption_batches_as_classification():
    prompts, labels = caption_targets(["a", "b", "a", "c"])
    assert prompts == ["a", "b", "c"] and labels.tolist() == [0, 1, 0, 2]
    assert caption_prompt("  a photo of the number three. ") == "a photo of the number three"
    logits = torch.randn(4, 3)
    expected_t2i = -(torch.log_softmax(logits.T, dim=1) * torch.tensor(
        [[0.5, 0, 0.5, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])).sum(1).mean()
    expected = 0.5 * (F.cross_entropy(logits, labels) + expected_t2i)
    assert torch.allclose(caption_contrastive_loss(logits, labels), expected)


def test_fit_caption_cuts_words(tiny_backbone):
    long = " ".join(["word"] * 40)
    fitted = fit_caption(long, tiny_backbone.tokenizer, 10)
    assert 1 <= len(fitted.split()) <= 10
    assert fit_caption("a red circle", tiny_backbone.tokenizer, 10) == "a red circle"


# ---- (e) end to end on the tiny backbone --------------------------------------------------------------
@pytest.fixture(scope="module")
def starter_domains(tmp_path_factory):
    return starter_caption_pairs(tmp_path_factory.mktemp("captions"), shapes_per_class=1, digits_limit=16)


def test_gram_end_to_end_initializes_a_fresh_coop(tiny_backbone, starter_domains, tmp_path):
    from vlpt.methods.coop import CoOp, CoOpConfig

    config = CoOpConfig(n_ctx=4)
    torch.manual_seed(1)
    method = CoOp(tiny_backbone, ["cat", "dog"], ["a photo of a {}."], config)
    start = method.context.ctx.detach().clone()
    out = tmp_path / "gram" / "init.pt"
    result = meta_learn_initialization(method, starter_domains, steps=2, inner_lr=0.05, outer_lr=0.01,
                                       batch_size=4, seed=0, out_path=out)
    assert result.checkpoint == out and out.is_file()
    assert result.regulator_path == regulator_path_for(out) and result.regulator_path.is_file()
    assert len(result.history) == 2
    assert all(h["support_domains"][0] != h["query_domains"][0] for h in result.history)
    assert method.classnames == ["cat", "dog"]  # restored after meta-learning
    learned = method.context.ctx.detach().clone()
    assert not torch.equal(learned, start)

    fresh = CoOp(tiny_backbone, ["zero", "one", "two"], ["{}"], CoOpConfig(n_ctx=4, init_from=str(out)))
    assert torch.equal(fresh.context.ctx.detach(), learned)

    regulator = load_regulator(result.regulator_path)
    assert all(torch.equal(v, result.regulator.state_dict()[k].cpu()) for k, v in regulator.state_dict().items())
    handle = attach_regulator(fresh, regulator)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])

    def training_gradient():  # the training step: the loss, its backward pass, the gradient transforms
        fresh.context.ctx.grad = None
        fresh.training_step((images, labels), 0).backward()
        fresh.on_before_optimizer_step(None)
        return fresh.context.ctx.grad.clone()

    hooked = training_gradient()
    handle.remove()
    plain = training_gradient()
    assert torch.allclose(hooked, regulator.regulate("context.ctx", plain), atol=1e-6)
    assert not torch.allclose(hooked, plain)


def test_gram_is_deterministic_given_seed(tiny_backbone, starter_domains):
    from vlpt.methods.coop import CoOp, CoOpConfig

    def run(seed):
        torch.manual_seed(0)
        method = CoOp(tiny_backbone, ["x"], ["{}"], CoOpConfig(n_ctx=2))
        result = meta_learn_initialization(method, starter_domains, steps=1, batch_size=3, seed=seed,
                                           first_order=True, objective="method")
        return method.context.ctx.detach().clone(), result.history

    (a, history_a), (b, history_b), (c, _) = run(3), run(3), run(4)
    assert torch.equal(a, b) and history_a == history_b
    assert not torch.equal(a, c)


def test_gram_rejects_bad_inputs(tiny_backbone, starter_domains):
    from vlpt.methods.coop import CoOp, CoOpConfig
    from vlpt.methods.zeroshot import ZeroShotCLIP

    method = CoOp(tiny_backbone, ["x"], ["{}"], CoOpConfig(n_ctx=2))
    with pytest.raises(ConfigError, match="at least two domains"):
        meta_learn_initialization(method, {"digits8": starter_domains["digits8"]}, steps=1)
    with pytest.raises(ConfigError, match="objective"):
        meta_learn_initialization(method, starter_domains, steps=1, objective="nope")
    with pytest.raises(ConfigError, match="class-specific context"):
        meta_learn_initialization(CoOp(tiny_backbone, ["x"], ["{}"], CoOpConfig(n_ctx=2, csc=True)), starter_domains)
    with pytest.raises(ConfigError, match="no prompt parameters"):
        meta_learn_initialization(ZeroShotCLIP(tiny_backbone, ["x"], ["{}"]), starter_domains, steps=1)


def test_run_gram_with_a_method_config(tiny_backbone, starter_domains, tmp_path):
    from vlpt.methods.coop import CoOp, CoOpConfig

    folders = {d: str(tmp_path / d) for d in starter_domains}
    for domain, pairs in starter_domains.items():
        (tmp_path / domain).mkdir()
        for i, pair in enumerate(pairs[:4]):
            (tmp_path / domain / f"{i}.png").write_bytes(open(pair.path, "rb").read())
            (tmp_path / domain / f"{i}.txt").write_text(pair.caption)
    out = tmp_path / "coop_m4_gram.pt"
    result = run_gram("coop_m4", tiny_backbone, out, folders, steps=1, batch_size=2)
    assert result.config["method_config"]["name"] == "coop_m4"
    payload = torch.load(out, weights_only=True)
    assert payload["method"] == "coop" and list(payload["state_dict"]) == ["context.ctx"]
    assert torch.load(regulator_path_for(out), weights_only=True)["config"]["method_config"]["params"]["n_ctx"] == 4
    fresh = CoOp(tiny_backbone, ["a"], ["{}"], CoOpConfig(n_ctx=4, ctx_init="a photo of a", init_from=str(out)))
    assert torch.equal(fresh.context.ctx.detach(), payload["state_dict"]["context.ctx"])


def test_run_gram_is_reproducible_whatever_the_callers_random_state(tmp_path, tiny_backbone):
    outputs = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)  # a process that drew other random numbers before
        out = tmp_path / f"vpt{caller_seed}.pt"
        run_gram("vpt", tiny_backbone, out, "starter", 1, data_root=tmp_path / "data", batch_size=4)
        outputs.append(torch.load(out, weights_only=True)["state_dict"])
    assert outputs[0].keys() == outputs[1].keys()
    assert all(torch.equal(outputs[0][k], outputs[1][k]) for k in outputs[0])
