"""Independent vision-language prompting (IVLP), the uncoupled baseline of MaPLe
(Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023).

The same language prompts as MaPLe, plus vision prompts at image layers ``0 .. depth-1`` that
are learned on their own: no coupling function ties them to the language prompts.

Defaults follow the reference config (multimodal-prompt-learning, IVLP ``vit_b16_c2_ep5_batch4_2+2ctx``):
2 text and 2 vision tokens, prompts in all 12 layers of both towers (MaPLe's depth is 9), SGD lr 0.0035,
batch 4, 5 epochs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlpt.methods.maple import MaPLe, MaPLeConfig
from vlpt.prompts.deep import PromptStack
from vlpt.registry import register_method


@dataclass
class IVLPConfig(MaPLeConfig):
    n_vision_tokens: int = 2
    prompt_depth: int = 12


@register_method("ivlp")
class IVLP(MaPLe):
    """Separate text and vision prompts, no coupling."""

    Config = IVLPConfig

    def build_vision_prompts(self, n_tokens: int) -> None:
        self.visual_prompts = PromptStack(range(self.config.prompt_depth), self.config.n_vision_tokens,
                                          self.backbone.vision_width, dtype=self.backbone.dtype)

    def vision_prompts(self) -> dict[int, torch.Tensor]:
        return self.visual_prompts()
