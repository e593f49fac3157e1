"""IPO against a scripted OpenAI-compatible endpoint: the history grows, the best prompt is the one reported and
used, the record keeps every prompt, and a missing endpoint is refused up front."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from tests.test_harness import write_suite
from vlpt.errors import ConfigError
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.methods.ipo import IPO, meta_prompt, parse_instruction

ANSWERS = ["<INS>a photo of the <CLASS>.</INS>", "<INS>**a drawing of a <CLASS> shape.**</INS>",
           "<INS>a picture of something</INS>",  # no <CLASS>: dropped
           "<INS>a photo of the <CLASS>.</INS>",  # seen before: dropped
           "A <CLASS> in bright colours.</INS>", "<INS>the shape <CLASS>, coloured</INS>"]


class ScriptedEndpoint:
    """A local chat-completions server: the LLM's answers in turn, a fixed description for image requests."""

    def __init__(self):
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                content = body["messages"][0]["content"]
                if isinstance(content, list):
                    text = "coloured shapes on a plain background"
                else:
                    text = ANSWERS[(len([r for r in owner.requests if isinstance(
                        r["body"]["messages"][0]["content"], str)]) - 1) % len(ANSWERS)]
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def llm_prompts(self) -> list[str]:
        return [r["body"]["messages"][0]["content"] for r in self.requests
                if isinstance(r["body"]["messages"][0]["content"], str)]


@pytest.fixture()
def endpoint():
    server = ScriptedEndpoint()
    yield server
    server.server.shutdown()


def test_parse_and_meta_prompt_follow_the_reference_format():
    assert parse_instruction("Sure! <INS>**a photo of a <CLASS>.**</INS> done") == "A photo of a <CLASS>."
    assert parse_instruction("a <CLASS> photo</INS>") == "A <CLASS> photo"
    history = [{"step": 0, "prompt": "p0", "score": 50.0, "loss": 1.0}, {"step": 1, "prompt": "p1", "score": 10.0,
               "loss": 0.5}, {"step": 1, "prompt": "p2", "score": 70.0, "loss": 2.0},
               {"step": 1, "prompt": "p3", "score": 70.0, "loss": 1.0}]
    text = meta_prompt(history, ["red shapes"], size=2, threshold=20.0)
    assert "Image_0: red shapes" in text and "p1" not in text and "p0" not in text  # below 20%; beyond the 2 best
    assert text.index("<INS>p2</INS>") < text.index("<INS>p3</INS>")  # ascending: the best (lower loss) last


def test_a_suite_run_searches_prompts_and_records_them(tmp_path, endpoint, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    params = {"llm_base_url": endpoint.url, "steps": 2, "candidates_per_step": 3, "describer_model": "describer"}
    path = write_suite(tmp_path, backbone={"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"}, experiments=[
        {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
         "methods": [{"config": "ipo", "params": params}]}])
    Harness(load_suite(path), progress=False).run_all()
    (record_path,) = (tmp_path / "out" / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    search = record["config"]["prompt_search"]
    scored = [h for h in search["history"] if h["score"] is not None]
    assert [h["prompt"] for h in scored] == ["a photo of a <CLASS>.", "A photo of the <CLASS>.",
                                             "A drawing of a <CLASS> shape.", "A <CLASS> in bright colours.",
                                             "The shape <CLASS>, coloured"]  # 6 answers over 2 steps, polished
    assert [(h["prompt"], h["dropped"]) for h in search["history"] if h["score"] is None] == [
        ("A picture of something", "no <CLASS>"), ("A photo of the <CLASS>.", "seen before")]
    best = max(scored, key=lambda h: (h["score"], -h["loss"]))
    assert search["best_prompt"] == best["prompt"]
    assert len(search["descriptions"]) == 24 and search["descriptions"][0] == "coloured shapes on a plain background"
    asked = endpoint.llm_prompts()
    assert len(asked) == 6 and "Image_23: coloured shapes" in asked[0]
    assert "<INS>A photo of the <CLASS>.</INS>" in asked[3]  # the second step shows the first step's prompts
    assert all(r["auth"] == "Bearer test-key" and r["path"] == "/v1/chat/completions" for r in endpoint.requests)


def test_the_best_prompt_is_the_one_that_classifies_and_a_search_continues(tiny_backbone, endpoint, tmp_path):
    from types import SimpleNamespace

    classes = ["red circle", "green square", "blue star"]
    features = torch.randn(9, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(9) % 3
    datamodule = SimpleNamespace(train_eval_dataloader=lambda: [(features, labels)], data=SimpleNamespace(train=[]))
    method = IPO(tiny_backbone, classes, ["a photo of a {}."],
                 IPO.Config(llm_base_url=endpoint.url, steps=1, candidates_per_step=2))
    assert method.fit_without_gradients(datamodule)
    assert len(method.history) == 3
    best = max(method.history, key=lambda h: (h["score"], -h["loss"]))["prompt"]
    assert method.best_prompt == best
    from vlpt.methods.zeroshot import zero_shot_weights

    expected = zero_shot_weights(tiny_backbone, classes, [best.replace("<CLASS>", "{}")]).float()
    assert torch.allclose(method.class_weights(), expected)
    path = method.save_checkpoint(tmp_path / "ipo.pt")
    more = IPO(tiny_backbone, classes, ["a photo of a {}."],
               IPO.Config(llm_base_url=endpoint.url, steps=1, candidates_per_step=4, init_from=str(path)))
    assert more.history == method.history
    more.fit_without_gradients(datamodule)  # answers 3-6: one without <CLASS> and one repeat are dropped
    assert [(h["step"], h["score"] is None) for h in more.history] == [
        (0, False), (1, False), (1, False), (2, True), (2, True), (2, False), (2, False)]


def test_without_an_endpoint_it_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("VLPT_LLM_BASE_URL", raising=False)
    path = write_suite(tmp_path, experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1],
                                               "seeds": [1], "methods": ["ipo"]}])
    with pytest.raises(ConfigError, match="ipo needs an OpenAI-compatible chat endpoint: set llm_base_url"):
        load_suite(path)


def test_scores_are_zero_shot_clip_and_odd_answers_are_dropped_not_fatal(tiny_backbone):
    from vlpt.methods.ipo import template_of
    classes = ["red circle", "green square", "blue star"]
    method = IPO(tiny_backbone, classes, ["a photo of a {}."], IPO.Config(llm_base_url="http://127.0.0.1:9"))
    features = torch.nn.functional.normalize(torch.randn(9, tiny_backbone.embed_dim,
                                                         generator=torch.Generator().manual_seed(3)), dim=-1)
    labels = torch.arange(9) % 3
    with torch.no_grad():  # the literal texts, braces and all
        text = torch.nn.functional.normalize(tiny_backbone.encode_texts([f"a {{photo}} of a {c}." for c in classes]),
                                             dim=-1)
    expected = 100.0 * float(((features @ text.T).argmax(-1) == labels).float().mean())
    assert method.score("a {photo} of a <CLASS>.", features, labels)[0] == pytest.approx(expected)  # braces kept
    assert template_of("a {x} <CLASS>") == "a {{x}} {}"
    seen = set()
    assert method.rejection("word " * 40 + "<CLASS>", seen) == "longer than the text context"
    assert method.rejection("see <INS> <CLASS>", seen) == "holds a tag"
    assert method.rejection("A <CLASS> photo", {"a <class> photo"}) == "seen before"  # case and spacing aside
    assert method.rejection("a {shape} <CLASS>", seen) is None
    method.best_prompt = "a drawing of a <CLASS>."
    method.set_classnames(["purple moon", "red circle"])
    assert method.logits(features).shape == (9, 2)


def test_a_failing_endpoint_gives_a_clear_error(tiny_backbone, monkeypatch):
    from types import SimpleNamespace

    from vlpt.methods.ipo import EndpointError

    monkeypatch.setattr("vlpt.methods.ipo.time.sleep", lambda seconds: None)
    method = IPO(tiny_backbone, ["a", "b"], ["a photo of a {}."],
                 IPO.Config(llm_base_url="http://127.0.0.1:9/v1", request_attempts=2, request_timeout_s=2))
    datamodule = SimpleNamespace(train_eval_dataloader=lambda: [(torch.randn(2, tiny_backbone.embed_dim),
                                                                 torch.arange(2))], data=SimpleNamespace(train=[]))
    with pytest.raises(EndpointError, match=r"http://127.0.0.1:9/v1/chat/completions did not answer after 2 attempts"):
        method.fit_without_gradients(datamodule)
