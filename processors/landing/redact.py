"""Redaction before storage: personal data and secrets replaced in the landing pipeline.

Agents' free text and attributes can carry personal data (HR, health, legal questions)
and secrets (an API key pasted into a ticket). The landing pipeline redacts each
decoded batch before anything else sees it, so the original text never reaches the
store, the dead-letter table and topic, the metrics or the logs. A match becomes
``[REDACTED:<rule>]``.

Detectors (``DETECTORS``): email, phone, payment card (candidates that pass the Luhn
check), IBAN, national ids (US SSN, UK National Insurance number), API keys (well-known
vendor prefixes) and tokens (bearer tokens, JWTs), plus the deployment's own regexes.
Which rules apply to which column is configured per field, and per agent on top
(``redaction.yaml``). One regex pass a column (all its rules together) finds the
rows any rule could touch, and each rule is then one polars expression over those rows;
the Luhn check runs on the batch's candidates as list arithmetic: nothing loops over
events in Python. Matches are counted per rule and field for
``agentwatch_redactions_total``.

Patterns use the Rust regex dialect polars runs (no look-around, no back-references).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import polars as pl

from agentwatch.decoding import decode
from agentwatch.processors.store.tables import DEAD_LETTERS_SCHEMA, EVENTS_SCHEMA
from agentwatch.settings import ConfigError
from agentwatch.yamlfile import read_yaml

DEFAULT_REDACTION_FILE: Final = Path(__file__).parent / "redaction.yaml"
ALL: Final = "*"

# Applied in this order: secrets first (a key may contain digits a phone rule would
# take), then cards and IBANs (long digit runs), then the rest.
DETECTORS: Final[Mapping[str, str]] = {
    "api_key": (
        r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
        r"|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})"
    ),
    "token": (
        r"(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*"
        r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    ),
    "payment_card": r"\b(?:\d[ -]?){12,18}\d\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    "national_id": (
        r"\b(?:00[1-9]|0[1-9]\d|[1-578]\d{2}|6[0-57-9]\d|66[0-57-9])-(?:0[1-9]|[1-9]\d)-"
        r"(?:000[1-9]|00[1-9]\d|0[1-9]\d{2}|[1-9]\d{3})\b"
        r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    ),
    "phone": (
        r"\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}\b"
        r"|\(\d{3}\) ?\d{3}[ .-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b"
    ),
}
LUHN_RULE: Final = "payment_card"
TEXT_COLUMNS: Final = frozenset(k for k, v in EVENTS_SCHEMA.items() if v == pl.String())


class RedactionError(ConfigError):
    """A redaction config that cannot be used; the message names the file and key."""


class CustomRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    pattern: str


class AgentRedaction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One agent's exceptions: its own field map (replacing the default) and rules off."""

    fields: dict[str, list[str]] | None = None
    off: list[str] = []


class RedactionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    enabled: bool = True
    fields: dict[str, list[str]] = msgspec.field(
        default_factory=lambda: {"attributes": [ALL], "reason": [ALL], "label": [ALL]}
    )
    dead_letters: list[str] = msgspec.field(default_factory=lambda: [ALL])
    custom: list[CustomRule] = []
    agents: dict[str, AgentRedaction] = {}


@dataclass(frozen=True)
class Step:
    """One rule over one column; ``exceptions`` are agents for which it does the opposite."""

    column: str
    rule: str
    pattern: str
    default: bool
    exceptions: tuple[str, ...]

    def mask(self) -> pl.Expr:
        agents = pl.col("agent_id").is_in(list(self.exceptions))
        return ~agents if self.default else agents


@dataclass(frozen=True)
class Redacted:
    frame: pl.DataFrame
    counts: pl.DataFrame  # rule, field, count


COUNTS_SCHEMA: Final = {"rule": pl.String(), "field": pl.String(), "count": pl.Int64()}


def token(rule: str) -> str:
    return f"[REDACTED:{rule}]"


class Redactor:
    """The configured rules compiled into per-column steps; ``apply`` redacts a batch."""

    def __init__(self, config: RedactionConfig, source: str = "<memory>") -> None:
        self.config = config
        patterns = dict(DETECTORS)
        for i, custom in enumerate(config.custom):
            for key, value in (("name", custom.name), ("pattern", custom.pattern)):
                if not value.strip():
                    raise RedactionError(f"{source}: custom[{i}].{key}: must not be empty")
            if custom.name in patterns:
                raise RedactionError(f"{source}: custom rule {custom.name!r} is defined twice")
            _check_pattern(custom, source)
            patterns[custom.name] = custom.pattern
        self.patterns = patterns
        where = f"{source}: "
        _check_map(config.fields, patterns, f"{where}fields", TEXT_COLUMNS)
        _check_rules(config.dead_letters, patterns, f"{where}dead_letters")
        for agent, over in config.agents.items():
            if over.fields is not None:
                _check_map(over.fields, patterns, f"{where}agents.{agent}.fields", TEXT_COLUMNS)
            _check_rules(over.off, patterns, f"{where}agents.{agent}.off")
        self.steps = self._plan() if config.enabled else []
        # A row is a suspect when any pattern of any of its column's steps matches it.
        by_column: dict[str, list[str]] = {}
        for step in self.steps:
            by_column.setdefault(step.column, []).append(step.pattern)
        self._suspect = (
            pl.any_horizontal(
                pl.col(column).str.contains("|".join(f"(?:{p})" for p in patterns)).fill_null(False)
                for column, patterns in by_column.items()
            )
            if by_column
            else pl.lit(False)
        )
        self.dead_letter_rules = self._expand(config.dead_letters) if config.enabled else []

    def _expand(self, names: Sequence[str]) -> list[str]:
        return [r for r in self.patterns if ALL in names or r in names]

    def _plan(self) -> list[Step]:
        config = self.config
        columns = set(config.fields)
        for over in config.agents.values():
            columns |= set(over.fields or ())
        steps = []
        for column in sorted(columns):
            for rule, pattern in self.patterns.items():
                default = rule in self._expand(config.fields.get(column, []))
                exceptions = []
                for agent, over in config.agents.items():
                    fields = config.fields if over.fields is None else over.fields
                    applies = rule in self._expand(fields.get(column, [])) and rule not in over.off
                    if applies != default:
                        exceptions.append(agent)
                if default or exceptions:
                    steps.append(Step(column, rule, pattern, default, tuple(sorted(exceptions))))
        return steps

    def events(self, frame: pl.DataFrame) -> Redacted:
        """Redact an events batch.

        One pass finds the rows any rule could touch (each column searched once, for
        all its rules together); the rules then run in order on those rows alone. Most
        events carry nothing to redact, so the per-rule passes see a handful of rows, and
        a row no pattern matches is left as it is by every rule, so the result is exact.
        """
        counts: list[pl.DataFrame] = []
        if not self.steps or frame.is_empty():
            return Redacted(frame, _counts(counts))
        suspect = frame.select(self._suspect).to_series()
        if not suspect.any():
            return Redacted(frame, _counts(counts))
        rows = suspect.arg_true()
        part = frame.filter(suspect)
        for step in self.steps:
            part = _apply(part, step.column, step.rule, step.pattern, step.mask(), counts)
        columns = sorted({step.column for step in self.steps})
        redacted = frame.with_columns(frame[c].clone().scatter(rows, part[c]) for c in columns)
        return Redacted(redacted, _counts(counts))

    def dead_letters(self, frame: pl.DataFrame) -> Redacted:
        """Redact invalid messages: their raw text (kept only if UTF-8) and their reason."""
        if not self.dead_letter_rules or frame.height == 0:
            return Redacted(frame, pl.DataFrame(schema=COUNTS_SCHEMA))
        # Bytes that are not UTF-8 cannot be searched: they are not kept. (A loop over the
        # batch's dead letters only, the rare path: polars cannot cast bad UTF-8 leniently.)
        raw = pl.Series("raw", [_utf8(v) for v in frame["raw"].to_list()], pl.String())
        text = frame.with_columns(raw)
        counts: list[pl.DataFrame] = []
        for column in ("raw", "reason"):
            for rule in self.dead_letter_rules:
                text = _apply(text, column, rule, self.patterns[rule], pl.lit(True), counts)
        out = text.with_columns(pl.col("raw").cast(pl.Binary)).select(list(DEAD_LETTERS_SCHEMA))
        return Redacted(out, _counts(counts, prefix="dead_letters."))


def _utf8(value: bytes | None) -> str | None:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _apply(
    frame: pl.DataFrame,
    column: str,
    rule: str,
    pattern: str,
    mask: pl.Expr,
    counts: list[pl.DataFrame],
) -> pl.DataFrame:
    col = pl.col(column)
    if rule == LUHN_RULE:
        cards = _luhn_valid(frame.filter(mask & col.is_not_null())[column], pattern)
        if not cards:
            return frame
        hits = frame.filter(mask).select(
            col.str.extract_all(pattern).list.eval(pl.element().is_in(cards)).list.sum()
        )
        counts.append(_count_frame(rule, column, int(hits.to_series().sum() or 0)))
        replaced = col.str.replace_many(cards, [token(rule)] * len(cards))
    else:
        n = frame.filter(mask).select(col.str.count_matches(pattern).sum()).item()
        if not n:
            return frame
        counts.append(_count_frame(rule, column, int(n)))
        replaced = col.str.replace_all(pattern, token(rule))
    return frame.with_columns(pl.when(mask).then(replaced).otherwise(col).alias(column))


def _luhn_valid(values: pl.Series, pattern: str) -> list[str]:
    """The distinct candidate card numbers in ``values`` that pass the Luhn check."""
    candidates = values.str.extract_all(pattern).explode().drop_nulls().unique()
    if candidates.len() == 0:
        return []
    digit = pl.element().cast(pl.Int64)
    odd = pl.int_range(pl.len()) % 2 == 1
    doubled = pl.when(digit * 2 > 9).then(digit * 2 - 9).otherwise(digit * 2)
    checked = candidates.to_frame("c").with_columns(
        total=pl.col("c")
        .str.replace_all(r"[ -]", "")
        .str.split("")
        .list.reverse()
        .list.eval(pl.when(odd).then(doubled).otherwise(digit))
        .list.sum()
    )
    return checked.filter(pl.col("total") % 10 == 0)["c"].to_list()


def _count_frame(rule: str, column: str, n: int) -> pl.DataFrame:
    return pl.DataFrame({"rule": [rule], "field": [column], "count": [n]}, schema=COUNTS_SCHEMA)


def _counts(parts: list[pl.DataFrame], prefix: str = "") -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema=COUNTS_SCHEMA)
    out = pl.concat(parts)
    return out.with_columns((pl.lit(prefix) + pl.col("field")).alias("field")) if prefix else out


def _check_pattern(rule: CustomRule, source: str) -> None:
    try:
        pl.Series([""]).str.contains(rule.pattern)
    except Exception as exc:  # polars reports a bad regex as a ComputeError
        # The regex engine's message spans lines (the pattern, a caret, "error: ...").
        lines = str(exc).splitlines() or [type(exc).__name__]
        reason = next((x[len("error: ") :] for x in lines if x.startswith("error: ")), lines[0])
        raise RedactionError(
            f"{source}: custom.{rule.name}.pattern: not a valid regex {rule.pattern!r}: {reason}"
        ) from None


def _check_rules(names: Sequence[str], patterns: Mapping[str, str], where: str) -> None:
    unknown = sorted(set(names) - {*patterns, ALL})
    if unknown:
        raise RedactionError(f"{where}: unknown rule(s) {unknown}; known: {', '.join(patterns)}")


def _check_map(
    fields: Mapping[str, list[str]],
    patterns: Mapping[str, str],
    where: str,
    columns: frozenset[str],
) -> None:
    for column, names in fields.items():
        if column not in columns:
            known = ", ".join(sorted(columns))
            raise RedactionError(
                f"{where}: {column!r} is not a text field of events; known: {known}"
            )
        _check_rules(names, patterns, f"{where}.{column}")


def load_redaction(path: Path | None = None) -> Redactor:
    """The redactor of a YAML config (the shipped one when ``path`` is None)."""
    source = path or DEFAULT_REDACTION_FILE
    doc = read_yaml(source, RedactionError) or {}
    config = decode(doc, RedactionConfig, "", source, error=RedactionError)
    return Redactor(config, str(source))
