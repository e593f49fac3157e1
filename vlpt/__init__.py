"""vlpt: a benchmark suite for vision-language prompt tuning."""

__version__ = "0.1.0"
