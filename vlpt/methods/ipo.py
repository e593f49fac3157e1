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
the image describer (``describer_model``; null: no descriptions), the key read from the environment variable
``api_key_env``. The run's record holds every proposed prompt with its score (``config.prompt_search``), and a
run started from an IPO checkpoint (``init_from``) continues that history.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

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
    #: a vision model on the same endpoint that describes each training image (null: no descriptions)
    describer_model: str | None = None
    request_timeout_s: float = 120.0
    epochs: int | dict[int, int] = 1

    def __post_init__(self):
        super().__post_init__()
        if CLASS not in self.initial_prompt:
            raise ValueError(f"initial_prompt must contain {CLASS}, got {self.initial_prompt!r}")
        for name in ("steps", "candidates_per_step", "history_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def endpoint(self) -> str | None:
        return self.llm_base_url or os.environ.get(URL_ENV) or None


class ChatClient:
    """Chat completions from an OpenAI-compatible endpoint (``POST {base}/chat/completions``)."""

    def __init__(self, base_url: str, key: str | None, timeout: float):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.key, self.timeout = key, timeout

    def complete(self, model: str, content, temperature: float, max_tokens: int) -> str:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}],
                           "temperature": temperature, "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"ipo: the chat endpoint {self.url} did not answer ({error}); check llm_base_url") \
                from error
        return answer["choices"][0]["message"]["content"]


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
    shown = sorted((h for h in history if h["score"] >= threshold), key=lambda h: (h["score"], -h["loss"]))[-size:]
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
        if self._weights is None:
            with torch.no_grad():
                self._weights = zero_shot_weights(self.backbone, list(self.classnames),
                                                  [self.best_prompt.replace(CLASS, "{}")]).float()
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
        return ChatClient(self.config.endpoint(), os.environ.get(self.config.api_key_env),
                          self.config.request_timeout_s)

    def initialize_from(self, path):
        """Continue the prompt search of an IPO checkpoint: its history, descriptions and best prompt."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("method") != self.name:
            raise CheckpointError(f"ipo continues the search of an ipo checkpoint; {path} holds "
                                  f"{payload.get('method')!r}")
        self.restore_checkpoint_extra(payload.get("extra", {}))
        return ["prompt_search"]

    def score(self, prompt: str, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Zero-shot CLIP with ``prompt`` on normalised training features: (accuracy %, mean cross-entropy)."""
        with torch.no_grad():
            weights = zero_shot_weights(self.backbone, list(self.classnames), [prompt.replace(CLASS, "{}")]).float()
            logits = self.backbone.logit_scale.float() * features @ weights.T
            accuracy = 100.0 * float((logits.argmax(-1) == labels).float().mean())
            return accuracy, float(F.cross_entropy(logits, labels))

    def admissible(self, prompt: str, seen: set[str]) -> bool:
        """New, with ``<CLASS>``, at most 500 characters, and within the text tower's context for every class."""
        key = hashlib.md5(prompt.encode()).hexdigest()
        if key in seen or CLASS not in prompt or len(prompt) > 500 or "INS" in prompt.replace(CLASS, ""):
            return False
        longest = max(self.classnames, key=len).replace("_", " ")
        tokens = self.backbone.tokenize([prompt.replace(CLASS, longest)])
        return int(self.backbone.eot_positions(tokens)[0]) < self.backbone.context_length - 1

    def describe(self, client: ChatClient, datamodule) -> list[str]:
        """One description per training image by the describer model (none without one)."""
        model = self.config.describer_model
        if not model:
            return []
        from PIL import Image

        found = []
        for sample in datamodule.data.train:
            buffer = io.BytesIO()
            with Image.open(sample.path) as image:
                image.convert("RGB").save(buffer, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            content = [{"type": "text", "text": DESCRIBE}, {"type": "image_url", "image_url": {"url": url}}]
            found.append(re.sub(r"\s+", " ", client.complete(model, content, 0.7, 256)).strip())
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
            self.descriptions = self.describe(client, datamodule)
        seen = {hashlib.md5(h["prompt"].encode()).hexdigest() for h in self.history}
        if not self.history:  # the start
            self.record_prompt(cfg.initial_prompt, 0, features, labels, seen)
        first = max((h["step"] for h in self.history), default=0) + 1
        for step in range(first, first + cfg.steps):
            question = meta_prompt(self.history, self.descriptions, cfg.history_size, cfg.score_threshold)
            for _ in range(cfg.candidates_per_step):
                answer = client.complete(cfg.llm_model, question, cfg.temperature, cfg.max_tokens)
                prompt = parse_instruction(answer)
                if self.admissible(prompt, seen):
                    self.record_prompt(prompt, step, features, labels, seen)
        best = max(self.history, key=lambda h: (h["score"], -h["loss"]))
        self.best_prompt, self._weights = best["prompt"], None
        return True

    def record_prompt(self, prompt, step, features, labels, seen) -> None:
        accuracy, loss = self.score(prompt, features, labels)
        self.history.append({"step": step, "prompt": prompt, "score": round(accuracy, 4), "loss": round(loss, 6)})
        seen.add(hashlib.md5(prompt.encode()).hexdigest())

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
