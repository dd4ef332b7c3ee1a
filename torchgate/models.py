"""How requests may name a served model; the gateway's router and the workers' check read the same rule."""

# A derived model id (`few-shot:<embedder>`, `fallback:cosine:<embedder>`) says what it is built from; it carries
# no short name, since its last path part is its embedder's name.
DERIVED_MARK = ":"


def short_name(model_id: str) -> str | None:
    """The last path part of an id (a directory's name, a trailing slash aside); none for a derived id."""
    if DERIVED_MARK in model_id:
        return None
    return model_id.rstrip("/").rsplit("/", 1)[-1]


def model_names(model_id: str, stands_in_for: str = "") -> set[str]:
    """The model's id or the configured model it stands in for (a fallback), each in full or by its short
    name."""
    ids = [model_id, stands_in_for] if stands_in_for else [model_id]
    return {name for each in ids for name in (each, short_name(each)) if name}
