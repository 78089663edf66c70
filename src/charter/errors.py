"""The one exception type users see: a single line that names the input and the fix."""

from __future__ import annotations

from typing import Any


class CharterError(Exception):
    """A problem with the user's input or environment, reported as one line.

    The CLI prints the message and exits with ``exit_code`` (2 for bad input, the
    default), without a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        # Error messages are one line by contract: fold anything a caller passed in.
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code


# Validation errors in plain words. pydantic's messages ("Input should be less than or equal
# to 5", "Extra inputs are not permitted", "Field required") speak the library's language;
# every message a user sees about a field goes through plain_words instead. It takes one item
# of ``ValidationError.errors()``, a plain mapping, so this module imports nothing.
_BOUNDS = {"greater_than": ("more than", "gt"), "greater_than_equal": ("at least", "ge"),
           "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}  # fmt: skip
_KINDS = {
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number", "float_type": "must be a number",
    "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be text", "dict_type": "must be a mapping (key: value)",
    "list_type": "must be a list", "tuple_type": "must be a list", "set_type": "must be a list",
    "model_type": "must be a mapping (key: value)", "model_attributes_type": "must be a mapping",
}  # fmt: skip


def plain_words(error: Any) -> str:
    """One validation error (an item of pydantic's ``errors()``) as plain words.

    The words follow the field's name: ``temperature: must be at most 5, got nan``.
    """
    kind, ctx = str(error.get("type", "")), error.get("ctx") or {}
    got = f", got {_shown(error['input'])}" if "input" in error else ""
    if kind == "missing":
        return "field is required"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling)"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"must be {words} {_shown(ctx.get(key))}{got}"
    if kind in _KINDS:
        return _KINDS[kind] + got
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected')}{got}"
    if kind in ("too_short", "string_too_short", "too_long", "string_too_long"):
        short = kind.endswith("too_short")
        size = ctx.get("min_length" if short else "max_length")
        bound = f"{'at least' if short else 'at most'} {size}"
        if kind.startswith("string"):
            return "must not be empty" if bound == "at least 1" else f"must be {bound} characters"
        actual = f", not {ctx['actual_length']}" if "actual_length" in ctx else ""
        return f"must have {bound} item(s){actual}"
    message = str(error.get("msg", "invalid value"))
    if kind in ("value_error", "assertion_error"):  # our validators' own words
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # Anything not listed above: the library's sentence, without its "Input should be".
    return message.replace("Input should be", "must be").replace("Input", "the value")


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:40] + "…"
