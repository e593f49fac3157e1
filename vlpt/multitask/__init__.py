"""Multitask prompt learning (MVLPT: Shen et al., "Multitask Vision-Language Prompt Tuning", 2022).

One prompt method is trained on several tasks at once, every sample scored against its own task's
classes; the learned prompt then initialises a target-task method (``MethodConfig.init_from``), or a
group of target tasks is learned jointly and evaluated task by task.
"""
from vlpt.multitask.data import SAMPLINGS, MultitaskDataModule, PerTaskBatchSampler, Task
from vlpt.multitask.module import SCORINGS, MultitaskPromptModule

__all__ = ["SAMPLINGS", "SCORINGS", "MultitaskDataModule", "MultitaskPromptModule", "PerTaskBatchSampler", "Task"]
