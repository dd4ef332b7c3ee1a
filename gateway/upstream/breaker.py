"""The circuit breaker's watcher: logs and exports each upstream's breaker state."""

import logging
import time

import pybreaker

from gateway.metrics import BREAKER_STATE

log = logging.getLogger(__name__)

_STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


class BreakerMonitor(pybreaker.CircuitBreakerListener):
    """Logs and exports state changes; remembers when the breaker opened (for Retry-After) and how many trials
    failed since it last closed (for the back-off of early trials)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.opened_at = 0.0
        self.failed_trials = 0
        BREAKER_STATE.labels(upstream).set(0)

    def state_change(self, cb, old_state, new_state) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            self.opened_at = time.monotonic()
            if old_state and old_state.name == pybreaker.STATE_HALF_OPEN:
                self.failed_trials += 1
        elif new_state.name == pybreaker.STATE_CLOSED:
            self.failed_trials = 0
        if old_state and old_state.name == new_state.name:
            return  # a call that was in flight when the breaker opened failed too: not a transition
        BREAKER_STATE.labels(self.upstream).set(_STATE_VALUES[new_state.name])
        log.warning("circuit breaker %s -> %s", old_state.name if old_state else None, new_state.name,
                    extra={"upstream": self.upstream, "failures": cb.fail_counter})
