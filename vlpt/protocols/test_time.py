"""``test_time``: nothing is trained (no train or val samples); evaluated on the source's test split ("test")
and on every target's test split with its own classes, for methods that adapt per test image (TPT) or not at
all (zero-shot). A prompt trained elsewhere enters through ``init_from`` (TPT+CoOp). Facts:
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
