"""SOQL: a tokenizer, a recursive-descent parser and an evaluator for the subset the engine uses.

Supported: SELECT of fields, parent relationship paths (`PricebookEntry.Product2.Name`), child
subqueries (`(SELECT Id FROM OrderItems)`), `COUNT()` and `COUNT(field)`; WHERE with = != <> < >
<= >= LIKE IN / NOT IN, AND / OR / NOT and parentheses (mixing AND and OR without parentheses is
refused, as Salesforce refuses it), null, booleans, numbers, strings with escapes, date and
date-time literals and the date constants TODAY, YESTERDAY, TOMORROW, LAST_N_DAYS:n,
NEXT_N_DAYS:n, THIS_MONTH; ORDER BY with ASC/DESC and NULLS FIRST/LAST; LIMIT; OFFSET.
Errors carry Salesforce's codes and its "ERROR at Row:r:Column:c" message layout.
Text comparisons are case-insensitive, as in Salesforce; dates are evaluated in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from emulators.salesforce import ids, schema
from emulators.salesforce.errors import ApiError
from emulators.salesforce.schema import Field, FieldType, SObject

Record = dict[str, Any]

_KEYWORDS = frozenset(
    {
        *("SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY"),
        *("ASC", "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "NULL", "TRUE", "FALSE"),
        *("GROUP", "HAVING", "WITH", "FOR", "USING"),
    }
)
_DATE_CONSTANTS = frozenset({"TODAY", "YESTERDAY", "TOMORROW", "THIS_MONTH"})
_N_DATE_CONSTANTS = frozenset({"LAST_N_DAYS", "NEXT_N_DAYS"})
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<number>[+-]?\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),:])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


# ---- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # ident, keyword, string, number, date, datetime, op, punct, eof
    text: str
    pos: int
    value: Any = None

    def is_keyword(self, *words: str) -> bool:
        return self.kind == "keyword" and self.text.upper() in words


class QueryError(ApiError):
    """A SOQL error; the message points at the offending place in the query."""

    def __init__(self, query: str, pos: int, error_code: str, text: str) -> None:
        super().__init__(400, error_code, _located(query, pos, text))


def _located(query: str, pos: int, text: str) -> str:
    line_start = query.rfind("\n", 0, pos) + 1
    line_end = query.find("\n", pos)
    line = query[line_start : line_end if line_end >= 0 else len(query)]
    row = query.count("\n", 0, pos) + 1
    column = pos - line_start + 1
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{text}"


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        char = query[pos]
        if char == "'":
            tokens.append(_string_token(query, pos))
            pos = tokens[-1].value[1]
            tokens[-1] = Token("string", tokens[-1].text, tokens[-1].pos, tokens[-1].value[0])
            continue
        match = _TOKEN_RE.match(query, pos)
        if match is None:
            raise QueryError(query, pos, "MALFORMED_QUERY", f"unexpected token: '{char}'")
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "ident" and text.upper() in _KEYWORDS:
            kind = "keyword"
        if kind != "ws":
            tokens.append(Token(kind, text, pos))
        pos = match.end()
    tokens.append(Token("eof", "", len(query)))
    return tokens


def _string_token(query: str, start: int) -> Token:
    chars: list[str] = []
    pos = start + 1
    while pos < len(query):
        char = query[pos]
        if char == "\\":
            if pos + 1 >= len(query):
                break
            escaped = query[pos + 1]
            if escaped in _ESCAPES:
                chars.append(_ESCAPES[escaped])
            elif escaped in "%_":
                # Kept escaped: only LIKE gives them meaning, and it needs to see the escape.
                chars.append("\\" + escaped)
            else:
                raise QueryError(
                    query,
                    pos,
                    "MALFORMED_QUERY",
                    "Invalid string literal '"
                    + query[start + 1 : pos + 2]
                    + "'. Illegal character sequence '\\"
                    + escaped
                    + "' in string literal.",
                )
            pos += 2
            continue
        if char == "'":
            return Token("string", query[start : pos + 1], start, ("".join(chars), pos + 1))
        chars.append(char)
        pos += 1
    raise QueryError(query, start, "MALFORMED_QUERY", "unexpected token: '''")


# ---- syntax tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    path: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class Count:
    field: FieldRef | None
    alias: str | None
    pos: int


@dataclass
class Subquery:
    relationship: str
    pos: int
    query: Query


@dataclass(frozen=True)
class DateRange:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, date, datetime, null, boolean, range
    value: Any
    pos: int


@dataclass(frozen=True)
class Comparison:
    field: FieldRef
    op: str  # = != < > <= >= LIKE IN NOT IN
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class Not:
    operand: Condition


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND / OR
    operands: tuple[Condition, ...]


Condition = Comparison | Not | BoolOp


@dataclass(frozen=True)
class OrderKey:
    field: FieldRef
    descending: bool
    nulls_last: bool


@dataclass
class Query:
    select: list[FieldRef | Count | Subquery]
    sobject_name: str
    sobject_pos: int
    where: Condition | None = None
    order_by: list[OrderKey] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


# ---- parser -----------------------------------------------------------------------------------


class Parser:
    def __init__(self, query: str, today: date) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0
        self.today = today

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def unexpected(self, token: Token | None = None) -> QueryError:
        token = token or self.current
        if token.kind == "eof":
            return QueryError(self.query, token.pos, "MALFORMED_QUERY", "unexpected token: <EOF>")
        return QueryError(
            self.query, token.pos, "MALFORMED_QUERY", f"unexpected token: '{token.text}'"
        )

    def expect_keyword(self, word: str) -> Token:
        if not self.current.is_keyword(word):
            raise self.unexpected()
        return self.advance()

    def expect_punct(self, text: str) -> Token:
        if not (self.current.kind == "punct" and self.current.text == text):
            raise self.unexpected()
        return self.advance()

    def parse(self) -> Query:
        query = self.parse_query()
        if self.current.kind != "eof":
            raise self.unexpected()
        return query

    def parse_query(self) -> Query:
        self.expect_keyword("SELECT")
        select = [self.parse_select_item()]
        while self.current.kind == "punct" and self.current.text == ",":
            self.advance()
            select.append(self.parse_select_item())
        self.expect_keyword("FROM")
        name = self.advance()
        # Object names may be words SOQL also uses as keywords: `FROM Order` is valid.
        if name.kind not in ("ident", "keyword") or "." in name.text:
            raise self.unexpected(name)
        query = Query(select, name.text, name.pos)
        if self.current.is_keyword("WHERE"):
            self.advance()
            query.where = self.parse_condition()
        if self.current.is_keyword("ORDER"):
            self.advance()
            self.expect_keyword("BY")
            query.order_by.append(self.parse_order_key())
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                query.order_by.append(self.parse_order_key())
        if self.current.is_keyword("LIMIT"):
            self.advance()
            query.limit = self.parse_count_number()
        if self.current.is_keyword("OFFSET"):
            self.advance()
            query.offset = self.parse_count_number()
        return query

    def parse_count_number(self) -> int:
        token = self.advance()
        if token.kind != "number" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)

    def parse_select_item(self) -> FieldRef | Count | Subquery:
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.advance()
            start = self.index
            inner = self.parse_query()
            self.expect_punct(")")
            if any(isinstance(item, Subquery) for item in inner.select):
                raise self.unexpected(self.tokens[start])
            return Subquery(inner.sobject_name, inner.sobject_pos, inner)
        if token.kind == "ident" and token.text.upper() == "COUNT":
            following = self.tokens[self.index + 1]
            if following.kind == "punct" and following.text == "(":
                self.advance()
                self.advance()
                counted = None
                if self.current.kind == "ident":
                    counted = self.parse_field()
                self.expect_punct(")")
                alias = None
                if self.current.kind == "ident":
                    alias = self.advance().text
                return Count(counted, alias, token.pos)
        return self.parse_field()

    def parse_field(self) -> FieldRef:
        token = self.advance()
        if token.kind != "ident":
            raise self.unexpected(token)
        return FieldRef(tuple(token.text.split(".")), token.pos)

    def parse_order_key(self) -> OrderKey:
        ref = self.parse_field()
        descending = False
        if self.current.is_keyword("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_last = descending
        if self.current.is_keyword("NULLS"):
            self.advance()
            if not self.current.is_keyword("FIRST", "LAST"):
                raise self.unexpected()
            nulls_last = self.advance().text.upper() == "LAST"
        return OrderKey(ref, descending, nulls_last)

    def parse_condition(self) -> Condition:
        first = self.parse_unary()
        if not self.current.is_keyword("AND", "OR"):
            return first
        op = self.current.text.upper()
        operands = [first]
        while self.current.is_keyword("AND", "OR"):
            if self.current.text.upper() != op:
                # Salesforce insists on parentheses when AND and OR are mixed.
                raise self.unexpected()
            self.advance()
            operands.append(self.parse_unary())
        return BoolOp(op, tuple(operands))

    def parse_unary(self) -> Condition:
        if self.current.is_keyword("NOT"):
            self.advance()
            return Not(self.parse_unary())
        if self.current.kind == "punct" and self.current.text == "(":
            self.advance()
            inner = self.parse_condition()
            self.expect_punct(")")
            return inner
        return self.parse_comparison()

    def parse_comparison(self) -> Comparison:
        ref = self.parse_field()
        token = self.current
        if token.kind == "op":
            self.advance()
            op = "!=" if token.text == "<>" else token.text
            return Comparison(ref, op, (self.parse_literal(),))
        if token.is_keyword("LIKE"):
            self.advance()
            return Comparison(ref, "LIKE", (self.parse_literal(),))
        negated = False
        if token.is_keyword("NOT"):
            self.advance()
            negated = True
        if self.current.is_keyword("IN"):
            self.advance()
            self.expect_punct("(")
            values = [self.parse_literal()]
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                values.append(self.parse_literal())
            self.expect_punct(")")
            return Comparison(ref, "NOT IN" if negated else "IN", tuple(values))
        raise self.unexpected()

    def parse_literal(self) -> Literal:
        token = self.advance()
        if token.kind == "string":
            return Literal("string", token.value, token.pos)
        if token.kind == "number":
            return Literal("number", float(token.text), token.pos)
        if token.kind == "date":
            parsed = schema.parse_date(token.text)
            if parsed is None:
                raise self.unexpected(token)
            return Literal("date", parsed, token.pos)
        if token.kind == "datetime":
            moment = schema.parse_datetime(token.text)
            if moment is None:
                raise self.unexpected(token)
            return Literal("datetime", moment, token.pos)
        if token.is_keyword("NULL"):
            return Literal("null", None, token.pos)
        if token.is_keyword("TRUE", "FALSE"):
            return Literal("boolean", token.text.upper() == "TRUE", token.pos)
        if token.kind == "ident" and token.text.upper() in _DATE_CONSTANTS:
            return Literal("range", self.date_range(token.text.upper(), 0), token.pos)
        if token.kind == "ident" and token.text.upper() in _N_DATE_CONSTANTS:
            self.expect_punct(":")
            amount = self.advance()
            if amount.kind != "number" or not amount.text.isdigit():
                raise self.unexpected(amount)
            return Literal(
                "range", self.date_range(token.text.upper(), int(amount.text)), token.pos
            )
        raise self.unexpected(token)

    def date_range(self, constant: str, amount: int) -> DateRange:
        today = datetime(self.today.year, self.today.month, self.today.day, tzinfo=UTC)
        day = timedelta(days=1)
        if constant == "TODAY":
            return DateRange(today, today + day)
        if constant == "YESTERDAY":
            return DateRange(today - day, today)
        if constant == "TOMORROW":
            return DateRange(today + day, today + 2 * day)
        if constant == "LAST_N_DAYS":
            return DateRange(today - amount * day, today + day)
        if constant == "NEXT_N_DAYS":
            return DateRange(today + day, today + (amount + 1) * day)
        first = today.replace(day=1)
        following = (first + 32 * day).replace(day=1)
        return DateRange(first, following)


def parse(query: str, today: date | None = None) -> Query:
    return Parser(query, today or datetime.now(UTC).date()).parse()


# ---- evaluation -------------------------------------------------------------------------------


class RecordSource(Protocol):
    def records(self, sobject: SObject, *, include_deleted: bool = False) -> list[Record]: ...

    def get(self, record_id: str, *, include_deleted: bool = False) -> Record | None: ...


@dataclass(frozen=True)
class ResolvedPath:
    """A field path checked against the schema: the lookups to follow, then the field."""

    hops: tuple[Field, ...]
    field: Field
    objects: tuple[SObject, ...]  # the object of each hop's target, then the field's object


@dataclass
class QueryResult:
    total_size: int
    records: list[Record]


class Evaluator:
    def __init__(
        self, query_text: str, source: RecordSource, version: str, include_deleted: bool
    ) -> None:
        self.text = query_text
        self.source = source
        self.version = version
        self.include_deleted = include_deleted

    # schema checks

    def resolve_object(self, name: str, pos: int) -> SObject:
        sobject = schema.get_object(name)
        if sobject is None or sobject.platform_event:
            raise QueryError(
                self.text,
                pos,
                "INVALID_TYPE",
                f"sObject type '{name}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference your "
                "WSDL or the describe call for the appropriate names.",
            )
        return sobject

    def resolve(self, sobject: SObject, ref: FieldRef) -> ResolvedPath:
        hops: list[Field] = []
        objects: list[SObject] = []
        current = sobject
        for part in ref.path[:-1]:
            lookup = current.relationship(part)
            target = schema.get_object(lookup.reference_to or "") if lookup else None
            if lookup is None or target is None:
                raise QueryError(
                    self.text,
                    ref.pos,
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{part}' in field path. If you are "
                    "attempting to use a custom relationship, be sure to append the '__r' after "
                    "the custom relationship name. Please reference your WSDL or the describe "
                    "call for the appropriate names.",
                )
            hops.append(lookup)
            objects.append(target)
            current = target
        spec = current.field(ref.path[-1])
        if spec is None:
            raise QueryError(
                self.text,
                ref.pos,
                "INVALID_FIELD",
                f"No such column '{ref.path[-1]}' on entity '{current.name}'. If you are "
                "attempting to use a custom field, be sure to append the '__c' after the custom "
                "field name. Please reference your WSDL or the describe call for the appropriate "
                "names.",
            )
        objects.append(current)
        return ResolvedPath(tuple(hops), spec, tuple(objects))

    # running

    def run(self, query: Query) -> QueryResult:
        sobject = self.resolve_object(query.sobject_name, query.sobject_pos)
        rows = self.source.records(sobject, include_deleted=self.include_deleted)
        return self.select(query, sobject, rows)

    def select(self, query: Query, sobject: SObject, rows: list[Record]) -> QueryResult:
        counts = [item for item in query.select if isinstance(item, Count)]
        if counts and len(query.select) > 1:
            other = next(i for i in query.select if not isinstance(i, Count))
            name = ".".join(other.path) if isinstance(other, FieldRef) else other.relationship
            raise QueryError(
                self.text,
                other.pos,
                "MALFORMED_QUERY",
                f"Field must be grouped or aggregated: {name}",
            )
        plan = self.plan(query, sobject)
        matcher = self.compile(sobject, query.where) if query.where else None
        if matcher is not None:
            rows = [row for row in rows if matcher(row)]
        rows = self.sort(sobject, rows, query.order_by)
        start = query.offset or 0
        rows = rows[start:]
        if query.limit is not None:
            rows = rows[: query.limit]
        if counts:
            return self.aggregate(counts[0], sobject, rows)
        return QueryResult(len(rows), [plan(row) for row in rows])

    def aggregate(self, count: Count, sobject: SObject, rows: list[Record]) -> QueryResult:
        if count.field is None:
            return QueryResult(len(rows), [])
        path = self.resolve(sobject, count.field)
        value = sum(1 for row in rows if self.value(row, path) is not None)
        record = {"attributes": {"type": "AggregateResult"}, count.alias or "expr0": value}
        return QueryResult(1, [record])

    def plan(self, query: Query, sobject: SObject) -> Callable[[Record], Record]:
        """Check the select list once and return the function that shapes each row."""
        shapers: list[Callable[[Record, Record], None]] = []
        for item in query.select:
            if isinstance(item, FieldRef):
                shapers.append(self.field_shaper(self.resolve(sobject, item)))
            elif isinstance(item, Subquery):
                shapers.append(self.child_shaper(sobject, item))

        def shape(row: Record) -> Record:
            out: Record = {"attributes": self.attributes(sobject, row["Id"])}
            for shaper in shapers:
                shaper(row, out)
            return out

        return shape

    def attributes(self, sobject: SObject, record_id: str) -> dict[str, str]:
        return {
            "type": sobject.name,
            "url": f"/services/data/v{self.version}/sobjects/{sobject.name}/{record_id}",
        }

    def field_shaper(self, path: ResolvedPath) -> Callable[[Record, Record], None]:
        def shaper(row: Record, out: Record) -> None:
            target = out
            current: Record | None = row
            for hop, hop_object in zip(path.hops, path.objects, strict=False):
                assert hop.relationship_name is not None
                linked_id = current.get(hop.name) if current is not None else None
                linked = self.source.get(linked_id, include_deleted=True) if linked_id else None
                name = hop.relationship_name
                if linked is None:
                    target.setdefault(name, None)
                    return
                nested = target.get(name)
                if nested is None:
                    nested = {"attributes": self.attributes(hop_object, linked["Id"])}
                    target[name] = nested
                target = nested
                current = linked
            assert current is not None
            target[path.field.name] = current.get(path.field.name)

        return shaper

    def child_shaper(self, parent: SObject, sub: Subquery) -> Callable[[Record, Record], None]:
        relationship = parent.child(sub.relationship)
        if relationship is None:
            raise QueryError(
                self.text,
                sub.pos,
                "INVALID_TYPE",
                f"Didn't understand relationship '{sub.relationship}' in FROM part of query call. "
                "If you are attempting to use a custom relationship, be sure to append the '__r' "
                "after the custom relationship name. Please reference your WSDL or the describe "
                "call for the appropriate names.",
            )
        child = schema.get_object(relationship.child_object)
        assert child is not None
        link = child.field(relationship.field)
        assert link is not None
        # Check the subquery's fields now, so an error surfaces even when no row matches.
        self.plan(sub.query, child)
        if sub.query.where is not None:
            self.compile(child, sub.query.where)

        def shaper(row: Record, out: Record) -> None:
            children = [
                c
                for c in self.source.records(child, include_deleted=self.include_deleted)
                if c[link.name] == row["Id"]
            ]
            result = self.select(sub.query, child, children)
            out[relationship.name] = (
                {"totalSize": result.total_size, "done": True, "records": result.records}
                if result.records
                else None
            )

        return shaper

    def value(self, row: Record, path: ResolvedPath) -> Any:
        current: Record | None = row
        for hop in path.hops:
            linked_id = current.get(hop.name) if current is not None else None
            current = self.source.get(linked_id, include_deleted=True) if linked_id else None
            if current is None:
                return None
        return current.get(path.field.name) if current is not None else None

    def sort(self, sobject: SObject, rows: list[Record], keys: list[OrderKey]) -> list[Record]:
        ordered = list(rows)
        for key in reversed(keys):
            path = self.resolve(sobject, key.field)
            present = [r for r in ordered if self.value(r, path) is not None]
            absent = [r for r in ordered if self.value(r, path) is None]
            present.sort(key=self._sort_key_of(path), reverse=key.descending)
            ordered = present + absent if key.nulls_last else absent + present
        return ordered

    def _sort_key_of(self, path: ResolvedPath) -> Callable[[Record], Any]:
        return lambda row: _sort_key(self.value(row, path))

    def compile(self, sobject: SObject, condition: Condition) -> Callable[[Record], bool]:
        if isinstance(condition, Not):
            inner = self.compile(sobject, condition.operand)
            return lambda row: not inner(row)
        if isinstance(condition, BoolOp):
            parts = [self.compile(sobject, c) for c in condition.operands]
            if condition.op == "AND":
                return lambda row: all(p(row) for p in parts)
            return lambda row: any(p(row) for p in parts)
        path = self.resolve(sobject, condition.field)
        test = self.comparison(path, condition)
        return lambda row: test(self.value(row, path))

    def comparison(self, path: ResolvedPath, comp: Comparison) -> Callable[[Any], bool]:
        spec = path.field
        values = [self.operand(spec, comp, literal) for literal in comp.values]
        op = comp.op
        if op == "LIKE":
            if spec.type not in schema.TEXT_TYPES and spec.type not in schema.ID_TYPES:
                raise QueryError(
                    self.text,
                    comp.field.pos,
                    "INVALID_FIELD",
                    f"invalid operator on {spec.type.value} field: {spec.name}",
                )
            literal = comp.values[0]
            if literal.kind != "string":
                raise QueryError(
                    self.text, literal.pos, "MALFORMED_QUERY", "LIKE requires a string pattern"
                )
            pattern = _like_pattern(literal.value)
            return lambda actual: actual is not None and bool(pattern.match(str(actual)))
        if op in ("IN", "NOT IN"):
            negate = op == "NOT IN"
            return lambda actual: any(_matches(actual, "=", w) for w in values) != negate
        target = values[0]
        return lambda actual: _matches(actual, op, target)

    def operand(self, spec: Field, comp: Comparison, literal: Literal) -> Any:
        """The literal as a value comparable with the field's stored values, or a type error."""
        kind = spec.type
        if literal.kind == "null":
            if comp.op not in ("=", "!=", "IN", "NOT IN"):
                raise QueryError(
                    self.text,
                    literal.pos,
                    "MALFORMED_QUERY",
                    f"invalid operator on null value: {comp.op}",
                )
            return None
        if kind in schema.ID_TYPES:
            if literal.kind != "string":
                raise self.type_error(spec, literal, "id", quoted=True)
            if comp.op == "LIKE":
                return literal.value
            normalized = ids.normalize(literal.value)
            if normalized is None:
                raise QueryError(
                    self.text,
                    literal.pos,
                    "INVALID_QUERY_FILTER_OPERATOR",
                    f"invalid ID field: {literal.value}",
                )
            return normalized
        if kind in schema.TEXT_TYPES:
            if literal.kind != "string":
                raise self.type_error(spec, literal, "string", quoted=True)
            return literal.value if comp.op == "LIKE" else _Text(literal.value)
        if kind is FieldType.BOOLEAN:
            if literal.kind != "boolean":
                raise self.type_error(spec, literal, "boolean", quoted=False)
            if comp.op not in ("=", "!=", "IN", "NOT IN"):
                raise QueryError(
                    self.text,
                    literal.pos,
                    "INVALID_QUERY_FILTER_OPERATOR",
                    f"invalid operator on boolean field: {spec.name}",
                )
            return literal.value
        if kind in schema.NUMBER_TYPES:
            if literal.kind != "number":
                raise self.type_error(spec, literal, "double", quoted=False)
            return literal.value
        if kind is FieldType.DATE:
            if literal.kind == "date":
                day: date = literal.value
                return _Moment(datetime(day.year, day.month, day.day, tzinfo=UTC))
            if literal.kind == "range":
                return literal.value
            raise self.type_error(spec, literal, "date", quoted=False)
        if kind is FieldType.DATETIME:
            if literal.kind == "datetime":
                return _Moment(literal.value)
            if literal.kind == "range":
                return literal.value
            raise self.type_error(spec, literal, "dateTime", quoted=False)
        raise AssertionError(f"unhandled field type {kind}")

    def type_error(
        self, spec: Field, literal: Literal, type_name: str, *, quoted: bool
    ) -> QueryError:
        advice = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
        return QueryError(
            self.text,
            literal.pos,
            "INVALID_FIELD",
            f"value of filter criterion for field '{spec.name}' must be of type {type_name} and "
            f"{advice}",
        )


@dataclass(frozen=True)
class _Text:
    """A text operand: Salesforce compares text case-insensitively."""

    value: str


@dataclass(frozen=True)
class _Moment:
    value: datetime


def _as_moment(actual: Any) -> datetime | None:
    if not isinstance(actual, str):
        return None
    parsed_date = schema.parse_date(actual)
    if parsed_date is not None:
        return datetime(parsed_date.year, parsed_date.month, parsed_date.day, tzinfo=UTC)
    return schema.parse_datetime(actual)


def _matches(actual: Any, op: str, target: Any) -> bool:
    if target is None:
        return (actual is None) == (op == "=")
    if isinstance(target, DateRange):
        moment = _as_moment(actual)
        if moment is None:
            return op == "!="
        inside = target.start <= moment < target.end
        return {
            "=": inside,
            "!=": not inside,
            "<": moment < target.start,
            "<=": moment < target.end,
            ">": moment >= target.end,
            ">=": moment >= target.start,
        }[op]
    if actual is None:
        return op == "!="
    left: Any
    right: Any
    if isinstance(target, _Text):
        left, right = str(actual).lower(), target.value.lower()
    elif isinstance(target, _Moment):
        left, right = _as_moment(actual), target.value
        if left is None:
            return op == "!="
    else:
        left, right = actual, target
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    return bool(
        {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
    )


def _like_pattern(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _sort_key(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    return value


def execute(
    query_text: str,
    source: RecordSource,
    *,
    version: str,
    include_deleted: bool = False,
    today: date | None = None,
) -> QueryResult:
    """Parse and run one SOQL query; raises `QueryError` as Salesforce would answer it."""
    query = parse(query_text, today)
    return Evaluator(query_text, source, version, include_deleted).run(query)
