"""What a trial measures: accuracy (lm-eval), perplexity, latency, energy, memory.

Depends on ``space`` at most, never on ``dse``.
"""

from objectives.base import EvalTarget, Measurement, Objective

__all__ = ["EvalTarget", "Measurement", "Objective"]
