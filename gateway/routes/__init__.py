"""REST routes; each module exposes `router`."""
