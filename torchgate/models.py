"""How requests may name a served model; the gateway's router and the workers' check read the same rule."""


def model_names(model_id: str, stands_in_for: str = "") -> set[str]:
    """The model's id or the configured model it stands in for (a fallback), each in full or by its last path
    part (a directory's name, a trailing slash aside)."""
    ids = [model_id, stands_in_for] if stands_in_for else [model_id]
    return {name for each in ids for name in (each, each.rstrip("/").rsplit("/", 1)[-1])}
