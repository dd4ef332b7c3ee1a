"""A call's priority, from the gateway to the worker's batcher: interactive (the default) or background (a batch
job's line), in gRPC metadata so every RPC of every service carries it the same way."""

import contextvars

PRIORITY_KEY = "torchgate-priority"
BACKGROUND = "background"

# In the gateway: set by the batch job runner (gateway/jobs/) for the calls of a job's line.
background_work: contextvars.ContextVar[bool] = contextvars.ContextVar("background_work", default=False)
