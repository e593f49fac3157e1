"""A protocol from outside vlpt, in one module: ``few_shot_val`` trains few-shot like ``few_shot`` and is
evaluated on the dataset's test split ("test") and on its validation split ("val"), both with the dataset's
classes. Its facts (what records and the leaderboard know of it) are registered from this module's data."""
from __future__ import annotations

from vlpt.protocols import register_protocol
from vlpt.protocols.classification import ClassificationProtocol, few_shot_split, test_set
from vlpt.results.protocols import facts_from_dict, register_facts

FACTS = {
    "title": "Few-shot, scored on val and test",
    "order": 50,
    "eval_sets": ["test", "val"],
    "lead": ["test", "val"],
    "columns": [{"header": "Test", "set": "test"}, {"header": "Val", "set": "val"}],
    "notes": ["Val: the dataset's whole validation split."],
}
register_facts(facts_from_dict("few_shot_val", FACTS, __name__))


@register_protocol
class FewShotVal(ClassificationProtocol):
    name = "few_shot_val"

    def split(self, source, shots, seed, targets):
        train, val = few_shot_split(source, shots, seed)
        scored = test_set("val", source)
        scored.samples = list(source.val)
        return train, val, source, [test_set("test", source), scored]
