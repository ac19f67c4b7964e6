"""The concept expression language of `clapdex audit` (see docs/audit.md): tokenizer and parser.

Grammar (recursive descent, one function per rule; NOT binds tighter than AND, AND tighter than OR):

    expression := or_expr END
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | primary
    primary    := "(" or_expr ")" | term
    term       := name [":" NUMBER]          min weight; without it any weight > 0 counts
    name       := QUOTED | WORD+             "rain on roof", 'rain on roof' or rain on roof

Keywords are case-insensitive; a concept whose name contains a keyword as a word must be quoted.
Parentheses and NOTs nest at most MAX_DEPTH deep, and an expression names at most MAX_TERMS
concepts (deeper or longer ones are refused with an ExpressionError, not a RecursionError).
Adjacent bare words form one name ("dog bark" is the concept "dog bark"). Every error is an
ExpressionError naming the bad token and its 1-based character position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from clapdex.errors import ExpressionError

KEYWORDS = ("AND", "OR", "NOT")
MAX_DEPTH = 64      # nested parentheses and NOTs (every level is a nested SELECT in SQL)
MAX_TERMS = 5000    # concept terms in one expression


# ---- syntax tree ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Term:
    name: str
    min_weight: float | None  # None: any posting (weight > 0)
    position: int             # where the name starts in the text (0-based)


@dataclass(frozen=True)
class Not:
    child: "Node"


@dataclass(frozen=True)
class And:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    children: tuple["Node", ...]


Node = Union[Term, Not, And, Or]


def terms(node: Node) -> list[Term]:
    """Every term in the tree, left to right."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Not):
        return terms(node.child)
    return [t for child in node.children for t in terms(child)]


def positive_terms(node: Node, negated: bool = False) -> list[Term]:
    """Terms under an even number of NOTs: the concepts whose weights rank the matches."""
    if isinstance(node, Term):
        return [] if negated else [node]
    if isinstance(node, Not):
        return positive_terms(node.child, not negated)
    return [t for child in node.children for t in positive_terms(child, negated)]


# ---- tokens --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str      # WORD QUOTED NUMBER AND OR NOT LPAREN RPAREN COLON END
    text: str      # the value (a quoted name without its quotes)
    position: int  # 0-based offset in the expression


_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\s()\"':]+")
_SINGLE = {"(": "LPAREN", ")": "RPAREN", ":": "COLON"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _SINGLE:
            tokens.append(Token(_SINGLE[char], char, i))
            i += 1
        elif char in "\"'":
            end = text.find(char, i + 1)
            if end < 0:
                raise ExpressionError(f"unterminated quote {char}", text, i)
            if not text[i + 1:end].strip():
                raise ExpressionError("empty concept name", text, i)
            tokens.append(Token("QUOTED", " ".join(text[i + 1:end].split()), i))
            i = end + 1
        else:
            # After a colon a number is expected: read it as one, so "0.2" is not a word.
            number = _NUMBER.match(text, i) if tokens and tokens[-1].kind == "COLON" else None
            match = number or _WORD.match(text, i)
            value = match.group()
            kind = "NUMBER" if number else (value.upper() if value.upper() in KEYWORDS else "WORD")
            tokens.append(Token(kind, value, i))
            i = match.end()
    tokens.append(Token("END", "", len(text)))
    return tokens


# ---- parser --------------------------------------------------------------------------------------

def parse(text: str) -> Node:
    """Parse a concept expression into a tree of Term / Not / And / Or."""
    if not text.strip():
        raise ExpressionError("empty expression", text, 0)
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.current
        self.index += 1
        return token

    def fail(self, expected: str) -> ExpressionError:
        token = self.current
        found = "the end of the expression" if token.kind == "END" else repr(token.text)
        return ExpressionError(f"expected {expected} but found {found}", self.text, token.position)

    def parse(self) -> Node:
        node = self.or_expr()
        if self.current.kind != "END":
            raise self.fail("AND, OR or the end of the expression")
        found = terms(node)
        if len(found) > MAX_TERMS:
            raise ExpressionError(f"too many concepts ({len(found)}; at most {MAX_TERMS})",
                                  self.text, found[MAX_TERMS].position)
        return node

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested too deeply (more than {MAX_DEPTH} levels of "
                                  "parentheses and NOTs)", self.text, self.current.position)

    def or_expr(self) -> Node:
        children = [self.and_expr()]
        while self.current.kind == "OR":
            self.advance()
            children.append(self.and_expr())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self) -> Node:
        children = [self.not_expr()]
        while self.current.kind == "AND":
            self.advance()
            children.append(self.not_expr())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_expr(self) -> Node:
        if self.current.kind == "NOT":
            self.deeper()
            self.advance()
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        if self.current.kind == "LPAREN":
            self.deeper()
            opening = self.advance()
            node = self.or_expr()
            self.depth -= 1
            if self.current.kind != "RPAREN":
                if self.current.kind == "END":
                    raise ExpressionError("unclosed '('", self.text, opening.position)
                raise self.fail("')'")
            self.advance()
            return node
        return self.term()

    def term(self) -> Term:
        start = self.current
        if start.kind == "QUOTED":
            name = self.advance().text
        elif start.kind == "WORD":
            words = [self.advance().text]
            while self.current.kind == "WORD":
                words.append(self.advance().text)
            name = " ".join(words)
        else:
            raise self.fail("a concept name, NOT or '('")
        min_weight = None
        if self.current.kind == "COLON":
            self.advance()
            if self.current.kind != "NUMBER":
                raise self.fail("a minimum weight (a number such as 0.2)")
            min_weight = float(self.advance().text)
        return Term(name, min_weight, start.position)


def to_text(node: Node) -> str:
    """A canonical, fully parenthesised rendering (for messages and tests)."""
    if isinstance(node, Term):
        name = f'"{node.name}"'
        return name if node.min_weight is None else f"{name}:{node.min_weight:g}"
    if isinstance(node, Not):
        return f"NOT {to_text(node.child)}"
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(to_text(c) for c in node.children) + ")"
