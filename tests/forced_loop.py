"""A forced-loop test double for the model: a logits processor that makes every row (or chosen rows)
emit a fixed aperiodic prefix of `start` tokens and then one unit of `period` tokens forever, as a
looping VLM does. It is attached by wrapping the loaded model's generate(), the part of the engine
that is the model's (random weights cannot be made to loop on cue)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class ForcedLoop(LogitsProcessor):
    def __init__(self, tokens: Iterable[int], start: int, period: int, rows: Iterable[int] | None = None) -> None:
        self.tokens = list(tokens)  # ordinary token ids to draw from
        self.start, self.period = start, period
        draw = random.Random(start * 1000 + period)
        self.prefix = [draw.choice(self.tokens) for _ in range(start)]
        self.rows = None if rows is None else set(rows)
        self.prompt_length: int | None = None
        self.steps = 0  # decoding steps seen, over every generate() call

    def token(self, t: int) -> int:
        if t < self.start:  # no repetition: random draws
            return self.prefix[t]
        return self.tokens[(t - self.start) % self.period]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        self.steps += 1
        chosen = self.token(input_ids.shape[1] - self.prompt_length)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, chosen] = 0.0
        if self.rows is None:
            return forced
        rows = torch.tensor([r in self.rows for r in range(scores.shape[0])], device=scores.device)
        return torch.where(rows[:, None], forced, scores)


def force_loop(model: Any, make: Any) -> list[ForcedLoop]:
    """Wrap `model.generate` so each call decodes through a fresh `make()` ForcedLoop (after the
    engine's own processors); returns the list of the processors used, in call order."""
    original = model.generate
    used: list[ForcedLoop] = []

    def generate(*args: Any, logits_processor: Any = None, **kwargs: Any) -> Any:
        processor = make()
        used.append(processor)
        processors = LogitsProcessorList([*(logits_processor or []), processor])
        return original(*args, logits_processor=processors, **kwargs)

    model.generate = generate
    return used
