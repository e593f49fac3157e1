"""IPO: Interpretable Prompt Optimization (Du et al., "IPO: Interpretable Prompt Optimization for Vision-Language
Models", NeurIPS 2024; code lmsdss/IPO, after OPRO).

An LLM writes the prompt. Each step it reads a prompt-optimisation prompt (the task, descriptions of training
images by an image-description model, and the best earlier prompts with their scores) and proposes
``candidates_per_step`` new prompts (each ``<INS> ... </INS>``, ``<CLASS>`` standing for the class name); each is
scored by zero-shot CLIP with that prompt on the run's training images (top-1 accuracy in percent, and the mean
cross-entropy); after ``steps`` steps the best prompt (highest accuracy, then lowest loss) classifies. Nothing is
trained with gradients. As the reference: 100 steps of 8 candidates from gpt-3.5-turbo at temperature 1 and at
most 40 tokens, the 30 best earlier prompts shown in ascending order with those under 20% left out, candidates
seen before, longer than 500 characters or than the text tower's context dropped, the start "a photo of a
<CLASS>."; one description per training image of a model asked "Describe in detail the features that
distinguish the scene in this image.", all of them in every step's prompt.

vlpt's reading where the code leaves things open: candidates without ``<CLASS>`` are dropped (the reference asks
for it and scores such a prompt at chance); scores are on the training images' centre crops (the reference
scores augmented crops, so its scores are noisy) and the loss is the mean over all of them (the reference: its
last batch); the best prompt is chosen by the code above (the reference leaves the pick to its user); the task
line names the dataset's classes generically rather than "flowers".

Clients: any OpenAI-compatible chat-completions endpoint, for the LLM (``llm_base_url``, ``llm_model``) and for
the image describer (``describer_model``, on ``describer_base_url`` if given; null: no descriptions; at most
``max_descriptions`` images, one class after another), keys read from the environment (``api_key_env``,
``describer_api_key_env``); rate limits and server errors are retried with backoff. The run's record holds every
proposal, scored or with the reason it was dropped (``config.prompt_search``), and a run started from an IPO
checkpoint (``init_from``) continues that history, its prompts scored again on the new run's images.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only

from vlpt.errors import CheckpointError, ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.methods.linear_probe import extract_features
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.registry import register_method

CLASS = "<CLASS>"
DESCRIBE = "Describe in detail the features that distinguish the scene in this image."
#: the environment variable giving the endpoint when ``llm_base_url`` is null
URL_ENV = "VLPT_LLM_BASE_URL"


@dataclass
class IPOConfig(MethodConfig):
    #: an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (null: the VLPT_LLM_BASE_URL variable)
    llm_base_url: str | None = None
    llm_model: str = "gpt-3.5-turbo"
    #: the environment variable holding the endpoint's key (none sent when it is unset)
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 1.0
    max_tokens: int = 40
    steps: int = 100
    candidates_per_step: int = 8
    history_size: int = 30
    #: earlier prompts scoring below this accuracy (%) are left out of the prompt-optimisation prompt
    score_threshold: float = 20.0
    initial_prompt: str = "a photo of a <CLASS>."
    #: a vision model that describes training images (null: no descriptions), on its own endpoint and key if given
    describer_model: str | None = None
    describer_base_url: str | None = None
    describer_api_key_env: str | None = None
    #: training images described, one class after another (the reference's files hold at most about 200)
    max_descriptions: int = 100
    request_timeout_s: float = 120.0
    #: attempts per request (a rate limit or a server error is retried after 2, 4, ... seconds)
    request_attempts: int = 4
    epochs: int | dict[int, int] = 1

    result_neutral = MethodConfig.result_neutral + ("api_key_env", "describer_api_key_env", "request_timeout_s",
                                                    "request_attempts")

    def __post_init__(self):
        super().__post_init__()
        if CLASS not in self.initial_prompt:
            raise ValueError(f"initial_prompt must contain {CLASS}, got {self.initial_prompt!r}")
        for name in ("steps", "candidates_per_step", "history_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def endpoint(self) -> str | None:
        return self.llm_base_url or os.environ.get(URL_ENV) or None


class EndpointError(RuntimeError):
    """A chat endpoint that failed after its retries, or answered without a message."""


class ChatClient:
    """Chat completions from an OpenAI-compatible endpoint (``POST {base}/chat/completions``), retried with backoff."""

    def __init__(self, base_url: str, key: str | None, timeout: float, attempts: int = 4):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.key, self.timeout, self.attempts = key, timeout, max(1, attempts)

    def complete(self, model: str, content, temperature: float, max_tokens: int) -> str:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}],
                           "temperature": temperature, "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        for attempt in range(self.attempts):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read())
                break
            except urllib.error.HTTPError as error:
                failure = f"HTTP {error.code}"
                if error.code not in (408, 409, 429) and error.code < 500:
                    raise EndpointError(f"ipo: {self.url} refused the request ({failure}; model {model!r})") from error
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
                failure = str(error)
            if attempt + 1 == self.attempts:
                raise EndpointError(f"ipo: {self.url} did not answer after {self.attempts} attempts ({failure})")
            time.sleep(2.0 * 2 ** attempt)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise EndpointError(f"ipo: {self.url} answered without a message: {json.dumps(answer)[:300]}")
        return text


def template_of(prompt: str) -> str:
    """The open_clip template of a prompt: its braces kept as text, ``<CLASS>`` the class name's place."""
    return prompt.replace("{", "{{").replace("}", "}}").replace(CLASS, "{}")


def normalised(prompt: str) -> str:
    """What makes two prompts the same prompt (the CLIP tokenizer lowercases and splits on spaces)."""
    return " ".join(prompt.lower().split())


def parse_instruction(answer: str) -> str:
    """The text between ``<INS>`` and ``</INS>`` (a missing tag: the answer's start or end), polished as the
    reference does: stripped, ``**`` removed, the first letter capitalised."""
    start = answer.find("<INS>")
    end = answer.find("</INS>", start + 1 if start >= 0 else 0)
    text = answer[start + 5 if start >= 0 else 0:end if end >= 0 else len(answer)]
    text = text.replace("**", "").strip()
    return text[:1].upper() + text[1:]


def meta_prompt(history: list[dict], descriptions: list[str], size: int, threshold: float) -> str:
    """The prompt-optimisation prompt: the task, the image descriptions, the ``size`` best earlier prompts (at
    least ``threshold``% accuracy) in ascending order, and the answer's format."""
    scored = [h for h in history if h["score"] is not None]
    shown = sorted((h for h in scored if h["score"] >= threshold), key=lambda h: (h["score"], -h["loss"]))[-size:]
    parts = [f"Your task is to write an instruction for classifying images by their visual features. {CLASS} stands "
             f"for a class name and must appear in the instruction. Below are earlier instructions with their scores "
             f"(accuracy from 0 to 100, higher is better) and losses (from 0 up, lower is better)."]
    if descriptions:
        parts.append("Here is a description of some features of the images:\n" + "\n".join(
            f"Image_{i}: {d}" for i, d in enumerate(descriptions)))
    parts += [f"text:\n<INS>{h['prompt']}</INS>\nscore:\n{h['score']:.2f}\nloss:\n{h['loss']:.4f}" for h in shown]
    parts.append("Write a new instruction that differs from every instruction above and has a higher score and a "
                 "lower loss. Start it with <INS> and end it with </INS>. Keep it concise, effective and generally "
                 "applicable.")
    return "\n\n".join(parts)


@register_method("ipo")
class IPO(PromptMethod):
    """A prompt an LLM writes from the scores of its earlier prompts."""

    Config = IPOConfig
    frozen_image_features = True
    needs_llm = True  # its tests run it against a scripted local endpoint (tests/test_ipo.py)

    def build(self, classnames, templates):
        self.history: list[dict] = []
        self.descriptions: list[str] = []
        self.best_prompt = self.config.initial_prompt
        self.update_classnames(classnames, templates)

    def update_classnames(self, classnames, templates):
        self._weights = None

    def class_weights(self) -> torch.Tensor:
        if self._weights is None or self._weights.device != self.backbone.device:
            with torch.no_grad():
                self._weights = zero_shot_weights(self.backbone, list(self.classnames),
                                                  [template_of(self.best_prompt)]).float()
        return self._weights

    def logits(self, images):
        features = F.normalize(self.image_features(images).float(), dim=-1)
        return self.backbone.logit_scale.float() * features @ self.class_weights().T

    # ---- the search ----------------------------------------------------------------------
    @classmethod
    def config_refusal(cls, config):
        if not config.endpoint():
            return (f"ipo needs an OpenAI-compatible chat endpoint: set llm_base_url in its params or the {URL_ENV} "
                    f"environment variable (and the key in {config.api_key_env})")
        return None

    def client(self) -> ChatClient:
        refusal = self.config_refusal(self.config)
        if refusal:
            raise ConfigError(refusal)
        cfg = self.config
        return ChatClient(cfg.endpoint(), os.environ.get(cfg.api_key_env), cfg.request_timeout_s, cfg.request_attempts)

    def describer(self) -> ChatClient:
        cfg = self.config
        return ChatClient(cfg.describer_base_url or cfg.endpoint(), os.environ.get(cfg.describer_api_key_env or
                                                                                   cfg.api_key_env),
                          cfg.request_timeout_s, cfg.request_attempts)

    def initialize_from(self, path):
        """Continue the prompt search of an IPO checkpoint: its history, descriptions and best prompt."""
        if not Path(path).is_file():
            raise CheckpointError(f"init_from checkpoint {path} does not exist")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("method") != self.name:
            raise CheckpointError(f"ipo continues the search of an ipo checkpoint; {path} holds "
                                  f"{payload.get('method')!r}")
        self.restore_checkpoint_extra(payload.get("extra", {}))
        self._rescore = True  # its scores came from another run's images
        return ["prompt_search"]

    def score(self, prompt: str, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Zero-shot CLIP with ``prompt`` on normalised training features: (accuracy %, mean cross-entropy)."""
        with torch.no_grad():  # not memoised on the backbone: hundreds of candidates would crowd its cache
            names = [c.replace("_", " ") for c in self.classnames]
            weights = self.backbone.zero_shot_classifier(names, [template_of(prompt)]).float()
            logits = self.backbone.logit_scale.float() * features @ weights.T
            accuracy = 100.0 * float((logits.argmax(-1) == labels).float().mean())
            return accuracy, float(F.cross_entropy(logits, labels))

    def rejection(self, prompt: str, seen: set[str]) -> str | None:
        """Why a candidate is dropped (None: it is scored): seen before, without ``<CLASS>``, with a tag, longer
        than 500 characters or than the text tower's context for some class."""
        if normalised(prompt) in seen:
            return "seen before"
        if CLASS not in prompt:
            return f"no {CLASS}"
        if "<INS>" in prompt or "</INS>" in prompt:
            return "holds a tag"
        if len(prompt) > 500:
            return "over 500 characters"
        try:
            self.backbone.tokenize([template_of(prompt).format(c.replace("_", " ")) for c in self.classnames])
        except ConfigError:
            return "longer than the text context"
        return None

    def describe(self, datamodule) -> list[str]:
        """Descriptions of up to ``max_descriptions`` training images, one class after another (none without a
        describer model); images go as JPEG at most 448 pixels on a side."""
        cfg = self.config
        if not cfg.describer_model or cfg.max_descriptions < 1:
            return []
        from PIL import Image

        by_class: dict[int, list] = {}
        for sample in datamodule.data.train:
            by_class.setdefault(sample.label, []).append(sample)
        queues = list(by_class.values())
        chosen = []
        while len(chosen) < cfg.max_descriptions and any(queues):
            chosen += [queue.pop(0) for queue in queues if queue][:cfg.max_descriptions - len(chosen)]
        client, found = self.describer(), []
        for sample in chosen:
            buffer = io.BytesIO()
            with Image.open(sample.path) as image:
                image = image.convert("RGB")
                image.thumbnail((448, 448))
                image.save(buffer, format="JPEG", quality=90)
            url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
            content = [{"type": "text", "text": DESCRIBE}, {"type": "image_url", "image_url": {"url": url}}]
            found.append(re.sub(r"\s+", " ", client.complete(cfg.describer_model, content, 0.7, 256)).strip())
        return found

    def fit_without_gradients(self, datamodule) -> bool:
        """The search (under DDP in the first process alone: the others would repeat every LLM call and write no
        record)."""
        if rank_zero_only.rank != 0:
            return True
        cfg, client = self.config, self.client()
        features, labels = extract_features(self, datamodule.train_eval_dataloader())
        features = F.normalize(torch.from_numpy(features).float(), dim=-1).to(self.backbone.device)
        labels = torch.from_numpy(labels).long().to(features.device)
        if not self.descriptions:
            self.descriptions = self.describe(datamodule)
        if getattr(self, "_rescore", False):  # a continued search: its prompts scored again on this run's images
            for entry in self.history:
                if entry["score"] is not None:
                    entry["score"], entry["loss"] = self.rounded_score(entry["prompt"], features, labels)
            self._rescore = False
        seen = {normalised(h["prompt"]) for h in self.history}
        if not self.history:  # the start
            self.add(cfg.initial_prompt, 0, None, features, labels, seen)
        first = max((h["step"] for h in self.history), default=0) + 1
        for step in range(first, first + cfg.steps):
            question = meta_prompt(self.history, self.descriptions, cfg.history_size, cfg.score_threshold)
            for _ in range(cfg.candidates_per_step):
                prompt = parse_instruction(client.complete(cfg.llm_model, question, cfg.temperature, cfg.max_tokens))
                self.add(prompt, step, self.rejection(prompt, seen), features, labels, seen)
        best = max((h for h in self.history if h["score"] is not None), key=lambda h: (h["score"], -h["loss"]))
        self.best_prompt, self._weights = best["prompt"], None
        return True

    def rounded_score(self, prompt, features, labels) -> tuple[float, float]:
        accuracy, loss = self.score(prompt, features, labels)
        return round(accuracy, 4), round(loss, 6)

    def add(self, prompt, step, rejection, features, labels, seen) -> None:
        """Record a proposal: scored, or with the reason it was dropped (score and loss null)."""
        score, loss = (None, None) if rejection else self.rounded_score(prompt, features, labels)
        self.history.append({"step": step, "prompt": prompt, "score": score, "loss": loss,
                             **({"dropped": rejection} if rejection else {})})
        seen.add(normalised(prompt))

    # ---- what the run keeps ----------------------------------------------------------------
    def record_extra(self) -> dict:
        return {"prompt_search": {"best_prompt": self.best_prompt, "descriptions": self.descriptions,
                                  "history": self.history}}

    def checkpoint_extra(self) -> dict:
        return self.record_extra()["prompt_search"]

    def restore_checkpoint_extra(self, extra: dict) -> None:
        self.best_prompt = extra.get("best_prompt", self.best_prompt)
        self.history = list(extra.get("history", []))
        self.descriptions = list(extra.get("descriptions", []))
        self._weights = None
