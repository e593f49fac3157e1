"""``multitask``: one prompt trained on several datasets at once (MVLPT), each a few-shot task; evaluated on
every task's test split (named by the dataset). ``sampling`` (mixed or per-task batches) and ``scoring``
(against the union of all tasks' classes, MVLPT's code, or the sample's own task) are experiment settings
that change the result. Facts: ``configs/protocols/multitask.yaml``."""
from __future__ import annotations

from functools import partial

from vlpt.errors import ConfigError
from vlpt.metrics import evaluate_classifier
from vlpt.multitask import MultitaskDataModule, Task
from vlpt.protocols.base import Evaluation, PreparedRun, register_protocol
from vlpt.protocols.classification import ClassificationProtocol, few_shot_split, test_set


@register_protocol
class Multitask(ClassificationProtocol):
    name = "multitask"

    def check_experiment(self, experiment, where: str) -> None:
        super().check_experiment(experiment, where)
        if experiment.eval_limit is not None:
            raise ConfigError(f"{where}: eval_limit is not supported by protocol multitask")

    def check_method(self, resolved, experiment, where: str, method_config: str) -> None:
        from vlpt.methods.base import PromptMethod

        if resolved.cls.fit_without_gradients is not PromptMethod.fit_without_gradients:
            raise ConfigError(f"{where}: method {resolved.cls.name} is fitted (or prepared) from one task's "
                              f"training images outside gradient training and cannot be trained on several tasks "
                              f"(protocol multitask)")
        if resolved.cls.multitask_refusal:
            raise ConfigError(f"{where}: method {resolved.cls.name} cannot be trained on several tasks (protocol "
                              f"multitask): {resolved.cls.multitask_refusal}")
        super().check_method(resolved, experiment, where, method_config)

    def settings(self, experiment) -> dict:
        return {"sampling": experiment.sampling, "scoring": experiment.scoring}

    def split(self, source, shots, seed, targets):
        """One task: few-shot on its dataset, evaluated on its test split (as ``few_shot``)."""
        train, val = few_shot_split(source, shots, seed)
        return train, val, source, [test_set("test", source)]

    def build(self, harness, run, shots: int) -> list[Task]:
        """One few-shot task per dataset."""
        return [Task(name, self.data(harness.dataset(name), shots, run.identity.seed))
                for name in self.task_datasets(run.experiment)]

    def images(self, tasks: list[Task]) -> tuple[list[str], list[str]]:
        return ([s.path for t in tasks for s in t.data.train + t.data.val],
                [s.path for t in tasks for s in t.data.eval_sets[0].samples])

    def prepare(self, harness, run, config, tasks: list[Task], model) -> PreparedRun:
        experiment = run.experiment
        method = run.method.cls(model, tasks[0].classnames, tasks[0].templates, config)
        image_args = (model.image_size, model.preprocess_cfg["mean"], model.preprocess_cfg["std"])
        datamodule = MultitaskDataModule(tasks, *image_args, sampling=experiment.sampling,
                                         batch_size=config.batch_size, train_augment=experiment.train_augment,
                                         num_workers=harness.suite.trainer.num_workers, seed=run.identity.seed)

        def evaluate(index: int, task: Task, method) -> tuple[dict, None]:
            eval_set = task.data.eval_sets[0]
            method.set_classnames(eval_set.classnames, eval_set.templates)
            return evaluate_classifier(method, datamodule.eval_dataloader(index, eval_set), harness.device), None

        evaluations = [Evaluation(task.name, partial(evaluate, i, task)) for i, task in enumerate(tasks)]
        return PreparedRun(method, datamodule, evaluations, sum(len(t.data.train) for t in tasks),
                           sum(len(t.data.val) for t in tasks), sum(len(t.classnames) for t in tasks), tasks=tasks)
