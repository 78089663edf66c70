"""Visible tests that say what the code gave: the ``values`` option of the code loop.

Python's ``assert f(2) == 5`` fails with a bare ``AssertionError``, so a model revising its
code is told *that* the test failed, not what its function returned. :func:`explain_asserts`
rewrites each top-level assert of a visible test so that, failing, it reports the value:

    assert f(2) == 5   →   AssertionError: f(2) gave 3; the test expects 5

Comparisons with one operator, ``assert not X`` and ``assert X`` where X is a call, a name,
an attribute, a subscript or an ``and``/``or`` are rewritten, keeping the assert's own
message after the value; anything else, and a test that does not parse, runs as written.
Pass or fail is unchanged: the same expressions are evaluated once each, in the same order.
Values are shortened with :mod:`reprlib`. Only visible tests are ever rewritten, and only
for the loop's feedback; the score comes from the task's tests as written.
"""

from __future__ import annotations

import ast

_GOT, _WANT, _REPR = "_charter_got", "_charter_want", "_charter_repr"
_HELPER = (
    f"import reprlib as _charter_reprlib\n{_REPR} = _charter_reprlib.Repr()\n"
    f"{_REPR}.maxstring = {_REPR}.maxother = 80\n"
    f"{_REPR}.maxlist = {_REPR}.maxtuple = {_REPR}.maxset = {_REPR}.maxdict = 12\n"
)
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}  # fmt: skip


def explain_asserts(tests: str) -> str:
    """``tests`` with each top-level assert reporting what its expression gave when it fails
    (module docstring); ``tests`` unchanged when it does not parse or has no such assert."""
    try:
        module = ast.parse(tests)
    except (SyntaxError, ValueError):
        return tests
    lines, changed = [], False
    for statement in module.body:
        rewritten = _explained(statement) if isinstance(statement, ast.Assert) else None
        changed = changed or rewritten is not None
        lines.append(rewritten or ast.unparse(statement))
    return _HELPER + "\n".join(lines) + "\n" if changed else tests


def _explained(statement: ast.Assert) -> str | None:
    found = _rewritten(statement.test)
    if found is None or statement.msg is None:
        return found
    return f"{found} + ' (' + str({ast.unparse(statement.msg)}) + ')'"


def _rewritten(test: ast.expr) -> str | None:
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPS:
        left, right = ast.unparse(test.left), ast.unparse(test.comparators[0])
        op = _OPS[type(test.ops[0])]
        return _failing(f"({_GOT} := ({left})) {op} ({_WANT} := ({right}))", left,
                        "" if op == "==" else f"it {op} ", wanted=True)  # fmt: skip
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        operand = ast.unparse(test.operand)
        return _failing(f"not ({_GOT} := ({operand}))", operand, "a false value")
    if isinstance(test, (ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.BoolOp)):
        expression = ast.unparse(test)
        return _failing(f"({_GOT} := ({expression}))", expression, "a true value")
    return None


def _failing(condition: str, shown: str, expects: str, wanted: bool = False) -> str:
    """``assert condition``, failing with what ``shown`` gave (bound to the got-name), then
    what the test expects: ``expects``, followed by the wanted value's repr if ``wanted``."""
    value = f" + {_REPR}.repr({_WANT})" if wanted else ""
    return (f"assert {condition}, {shown + ' gave '!r} + {_REPR}.repr({_GOT}) + "
            f"{'; the test expects ' + expects!r}{value}")  # fmt: skip
