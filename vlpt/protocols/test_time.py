"""``test_time``: nothing is trained (no train or val samples); evaluated on the source's test split ("test")
and on every target's test split with its own classes, for methods that adapt per test image (TPT) or not at
all (zero-shot). Episodic: every test image adapts from the same starting state, so the order of the test
images changes nothing; methods whose state carries over the stream (TDA, DMN) run under
``online_test_time`` instead. A prompt trained elsewhere enters through ``init_from`` (TPT+CoOp). Facts:
``configs/protocols/test_time.yaml``."""
from __future__ import annotations

from vlpt.errors import ConfigError
from vlpt.protocols.base import register_protocol
from vlpt.protocols.classification import ClassificationProtocol, test_set


@register_protocol
class TestTimeAdaptation(ClassificationProtocol):
    __test__ = False  # not a pytest class
    name = "test_time"

    def split(self, source, shots, seed, targets):
        if shots:
            raise ConfigError(f"protocol {self.name} trains nothing; got shots={shots} (train a prompt in another "
                              f"experiment and start from it with init_from)")
        return [], [], source, [test_set("test", source)]

    def check_method(self, resolved, experiment, where: str, method_config: str) -> None:
        """Also refuse an episodic test-time method under a stream (``PromptMethod.test_stream``; the base refuses
        online methods everywhere but under ``online_test_time``)."""
        super().check_method(resolved, experiment, where, method_config)
        cls = resolved.cls
        if cls.adapts_at_test_time and cls.test_stream == "episodic" and self.facts.stream == "online":
            raise ConfigError(f"{where}: method {cls.name} adapts episodically (its state is reset after every test "
                              f"image); protocol {self.name} is a stream: run it under protocol test_time")

    def prepare(self, harness, run, config, data, model):
        prepared = super().prepare(harness, run, config, data, model)
        prepared.record_config["test_time"] = {"stream": self.facts.stream}
        return prepared
