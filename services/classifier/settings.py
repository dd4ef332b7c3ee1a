"""Classifier worker settings: TORCHGATE_CLASSIFIER_*."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ModelWorkerSettings

DATA = Path(__file__).parent / "data"


class ClassifierSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TORCHGATE_CLASSIFIER_")

    port: int = Field(50054, description="gRPC port.")
    metrics_port: int = Field(9454, description="Prometheus /metrics HTTP port; 0 disables it.")
    backend: Literal["few_shot", "checkpoint"] = Field(
        "few_shot", description="`few_shot`: a head trained at start-up on embeddings of the example file; "
        "`checkpoint`: a Hugging Face sequence-classification model directory (labels from its config)."
    )
    model: str = Field("sentence-transformers/all-MiniLM-L6-v2",
                       description="few_shot: the embedding model; checkpoint: the model directory or id.")
    examples: Path = Field(DATA / "intents.yaml", description="Labelled examples (YAML or JSONL) for few_shot.")
    techniques: Path = Field(DATA / "techniques.yaml", description="Intent/complexity -> techniques table.")
    out_of_scope: bool = Field(True, description="few_shot: answer `out_of_scope_intent` for texts no intent covers "
                                                 "(threshold learned from the example file); false: always an intent.")
    out_of_scope_intent: str = Field("out_of_scope", min_length=1, max_length=64,
                                     description="The intent name of texts no intent covers; examples listed under "
                                                 "it in the example file train it as a class of its own.")
    zero_shot: bool = Field(True, description="Classify by labels a request brings (`labels`): by similarity on the "
                                              "few-shot backend's embeddings, by entailment on an NLI checkpoint.")
    max_labels: int = Field(256, ge=1, description="Most labels in one zero-shot request.")
    max_label_pairs: int = Field(4096, ge=1, description="Most texts x labels in one zero-shot request.")
    label_cache_size: int = Field(16384, ge=1, description="Label prototypes the similarity method keeps (LRU).")
    reference_texts: Path = Field(DATA / "reference_texts.json", description="Similarity: texts a label's hub "
                                  "score is measured against (JSON `{texts: [...]}` or one text per line); a sample "
                                  "of your own traffic fits best.")
    hubness: float = Field(0.5, ge=0, le=1, description="Similarity: how much a label's mean similarity to its "
                                                       "nearest reference texts is subtracted; 0 turns it off.")
    hub_neighbours: int = Field(20, ge=1, description="Similarity: the nearest reference texts a hub score averages.")
    temperature: float = Field(0.0427, gt=0, description="Similarity, single label: softmax temperature "
                                                         "(fitted on held-out texts, README).")
    multi_label_scale: float = Field(21.4, gt=0, description="Similarity, multi-label: logistic slope.")
    multi_label_bias: float = Field(0.0098, description="Similarity, multi-label: the score at probability 0.5.")
    max_items_per_request: int = Field(100, ge=1, description="Most texts in one request.")
    max_chars_per_item: int = Field(8192, ge=1, description="Most characters in one text.")
