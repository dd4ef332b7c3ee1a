"""Every task the gateway serves, and per model upstream the task its models' predictions are (what a protocol
without a task in its path, TorchServe's or the Open Inference Protocol's, runs for a model of that upstream)."""

from gateway.tasks import Task
from gateway.tasks.classify import CLASSIFY
from gateway.tasks.documents import CHUNK, CONVERT
from gateway.tasks.embed import EMBED
from gateway.tasks.rerank import RERANK
from gateway.tasks.tokenize import TOKENIZE

TASKS: dict[str, Task] = {task.name: task for task in (EMBED, RERANK, CLASSIFY, TOKENIZE, CHUNK, CONVERT)}
MODEL_TASKS: dict[str, Task] = {task.upstream: task for task in (EMBED, RERANK, CLASSIFY)}
