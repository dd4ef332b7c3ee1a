"""Labelled example files for the few-shot head: YAML ({intents: {name: {description, examples}}}) or JSONL."""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class ExampleSet:
    intents: list[str]
    descriptions: dict[str, str]
    texts: list[str]
    labels: list[int]

    def count(self, intent: str) -> int:
        return self.labels.count(self.intents.index(intent))


def load_examples(path: Path) -> ExampleSet:
    """Read and check an example file; every problem is a ValueError that names the file and the fix."""
    if not path.is_file():
        raise ValueError(f"example file {path} does not exist")
    pairs: list[tuple[str, str]] = []
    descriptions: dict[str, str] = {}
    if path.suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or not {"text", "intent"} <= record.keys():
                    raise ValueError(f"{path}:{number}: each line needs \"text\" and \"intent\"")
                pairs.append((str(record["intent"]), str(record["text"])))
    else:
        document = yaml.safe_load(path.read_text()) or {}
        for intent, entry in (document.get("intents") or {}).items():
            descriptions[intent] = (entry or {}).get("description", "")
            pairs.extend((intent, str(text)) for text in (entry or {}).get("examples") or [])
    intents = list(dict.fromkeys(intent for intent, _ in pairs))
    if len(intents) < 2:
        raise ValueError(f"{path}: needs examples of at least two intents, found {len(intents)}")
    for intent in intents:
        if sum(1 for name, _ in pairs if name == intent) < 2:
            raise ValueError(f"{path}: intent {intent!r} needs at least two examples")
    return ExampleSet(intents, {i: descriptions.get(i, "") for i in intents}, [text for _, text in pairs],
                      [intents.index(intent) for intent, _ in pairs])
