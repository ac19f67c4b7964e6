"""The concept expression parser: precedence, parentheses, names, weights and error positions."""

from __future__ import annotations

import pytest

from clapdex.audit.expression import (And, ExpressionError, Not, Or, Term, parse, positive_terms,
                                      to_text, tokenize)
from clapdex.errors import QueryError


@pytest.mark.parametrize("text, canonical", [
    ("siren", '"siren"'),
    ("siren AND NOT music", '("siren" AND NOT "music")'),
    ("a OR b AND c", '("a" OR ("b" AND "c"))'),                 # AND binds tighter than OR
    ("a AND b OR c", '(("a" AND "b") OR "c")'),
    ("NOT a AND b", '(NOT "a" AND "b")'),                       # NOT binds tighter than AND
    ("NOT a OR b", '(NOT "a" OR "b")'),
    ("NOT (a OR b)", 'NOT ("a" OR "b")'),
    ("(a OR b) AND c", '(("a" OR "b") AND "c")'),
    ("a AND b AND c", '("a" AND "b" AND "c")'),
    ("a OR b OR c", '("a" OR "b" OR "c")'),
    ("NOT NOT a", 'NOT NOT "a"'),
    ("((a))", '"a"'),
    ("a and not b or c", '(("a" AND NOT "b") OR "c")'),          # keywords in any case
    ("dog:0.2 OR cat:0.2", '("dog":0.2 OR "cat":0.2)'),
    ("dog : .25", '"dog":0.25'),
    ("dog:1e-3", '"dog":0.001'),
    ('"rain on roof":0.3 AND wind', '("rain on roof":0.3 AND "wind")'),
    ("'rain on roof' OR \"dog\"", '("rain on roof" OR "dog")'),
    ("rain on roof AND dog bark", '("rain on roof" AND "dog bark")'),  # adjacent words = one name
    ('"rock and roll" OR jazz', '("rock and roll" OR "jazz")'),       # quoted keywords are names
    ("  spaced   out  ", '"spaced out"'),
    ("car-horn OR glass/break", '("car-horn" OR "glass/break")'),
])
def test_parses_to_the_expected_tree(text, canonical):
    assert to_text(parse(text)) == canonical


def test_tree_shapes_and_term_positions():
    tree = parse("dog:0.2 OR NOT (cat AND 'rain on roof')")
    assert isinstance(tree, Or)
    first, second = tree.children
    assert first == Term("dog", 0.2, 0)
    assert isinstance(second, Not) and isinstance(second.child, And)
    assert second.child.children == (Term("cat", None, 16), Term("rain on roof", None, 24))


def test_positive_terms_are_those_under_even_nots():
    names = [t.name for t in positive_terms(parse("a AND NOT b AND NOT (c OR NOT d)"))]
    assert names == ["a", "d"]


@pytest.mark.parametrize("text, position, message", [
    ("", 0, "empty expression"),
    ("dog AND", 7, "expected a concept name, NOT or '(' but found the end of the expression"),
    ("AND dog", 0, "expected a concept name, NOT or '(' but found 'AND'"),
    ("dog OR OR cat", 7, "found 'OR'"),
    ("(dog OR cat", 0, "unclosed '('"),
    ("dog OR cat)", 10, "expected AND, OR or the end of the expression but found ')'"),
    ("dog:", 4, "expected a minimum weight (a number such as 0.2) but found the end"),
    ("dog:abc", 4, "expected a minimum weight (a number such as 0.2) but found 'abc'"),
    ("dog:-0.2", 4, "found '-0.2'"),
    ('dog AND "rain', 8, 'unterminated quote "'),
    ("dog AND ''", 8, "empty concept name"),
    ("()", 1, "found ')'"),
    ("dog (cat)", 4, "expected AND, OR or the end of the expression but found '('"),
    (":0.2", 0, "found ':'"),
])
def test_errors_point_at_the_bad_token(text, position, message):
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    error = caught.value
    assert error.position == position
    assert message in str(error)
    assert f"at character {position + 1} of {text!r}" in str(error)
    assert "\n" not in str(error)
    assert isinstance(error, QueryError)


def test_tokens_carry_positions():
    kinds = [(t.kind, t.text, t.position) for t in tokenize("NOT (dog:0.5)")]
    assert kinds == [("NOT", "NOT", 0), ("LPAREN", "(", 4), ("WORD", "dog", 5), ("COLON", ":", 8),
                     ("NUMBER", "0.5", 9), ("RPAREN", ")", 12), ("END", "", 13)]
