"""Complexity of a request and the prompting techniques suggested for it (data: data/techniques.yaml).

Complexity is a transparent heuristic, not a model: longer texts, several sentences and words that
signal multi-step work (compare, design, step...) raise the score; 0.35 and 0.65 split the levels.
Every pattern here runs in linear time (no nested or overlapping repetition), whatever the text.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

LEVELS = ("simple", "moderate", "complex")
_MULTI_STEP = re.compile(
    r"\b(then|after that|steps?|first|finally|compare|analy[sz]e|design|optimi[sz]e|trade-?offs?|architecture|"
    r"implement|evaluate|plan|explain why|pros and cons|multiple|several)\b",
    re.IGNORECASE,
)


_TERMINATORS = re.compile(r"[.!?]+")


def _sentence_ends(text: str) -> int:
    """Runs of . ! ? followed by whitespace or the end: each run is matched once, so this is linear."""
    return sum(1 for run in _TERMINATORS.finditer(text) if run.end() == len(text) or text[run.end()].isspace())


def complexity(text: str) -> tuple[str, float]:
    words = len(text.split())
    sentences = max(1, _sentence_ends(text))
    markers = len(_MULTI_STEP.findall(text))
    score = min(1.0, 0.1 + words / 80 + 0.08 * (sentences - 1) + 0.1 * markers)
    level = LEVELS[0] if score < 0.35 else LEVELS[1] if score < 0.65 else LEVELS[2]
    return level, round(score, 3)


@dataclass
class TechniqueTable:
    by_intent: dict[str, list[str]]
    by_complexity: dict[str, list[str]]
    default: list[str]
    limit: int

    @classmethod
    def load(cls, path: Path) -> "TechniqueTable":
        data = yaml.safe_load(path.read_text())
        return cls(data.get("by_intent", {}), data.get("by_complexity", {}), data.get("default", []),
                   int(data.get("limit", 4)))

    def suggest(self, intent: str, level: str) -> list[str]:
        chosen = self.by_intent.get(intent, self.default) + self.by_complexity.get(level, [])
        return list(dict.fromkeys(chosen))[: self.limit]
