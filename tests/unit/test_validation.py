import pytest

from services.runtime.adapter import ModelDescription
from services.runtime.errors import InvalidInput, NotFound
from services.runtime.validation import validate_model_name, validate_texts


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "must contain at least one text"),
        (["ok", "  "], r"texts\[1\] is empty"),
        (["x"] * 5, "has 5 items; at most 4"),
        (["ok", "y" * 11], r"texts\[1\] has 11 characters; the limit is 10"),
    ],
)
def test_bad_text_lists_say_what_to_fix(texts, message):
    with pytest.raises(InvalidInput, match=message):
        validate_texts(texts, max_items=4, max_chars=10)


def test_good_text_lists_pass():
    validate_texts(["a", "bb"], max_items=4, max_chars=10)


def test_model_name_may_be_empty_full_or_short_but_nothing_else():
    model = ModelDescription("org/model", "/nowhere", "cpu", "float32", 128)
    validate_model_name("", model)
    validate_model_name("org/model", model)
    validate_model_name("model", model)
    validate_model_name("tiny", ModelDescription("/models/tiny/", "/models/tiny", "cpu", "float32", 128))
    with pytest.raises(NotFound, match="not served here"):
        validate_model_name("other", model)
    with pytest.raises(NotFound) as refused:
        validate_model_name("m" * 20_000, model)
    assert len(str(refused.value)) < 200, "a worker never echoes unbounded input"
