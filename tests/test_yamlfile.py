"""Every YAML file is read one way: safe, strict about keys, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.errors import ConfigError
from agentwatch.yamlfile import parse_yaml, read_yaml


class FormatError(ConfigError):
    """A format's own error type, as each file format has."""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1,\n", r"^x\.yaml:2:1: not valid YAML: while parsing a flow node, expected the "
                     r"node content, but found '<stream end>'$"),
        ("a: b: c\n", r"^x\.yaml:1:5: not valid YAML: mapping values are not allowed here$"),
        ("a: 1\na: 2\n", r"^x\.yaml:2:1: not valid YAML: duplicate key 'a'$"),
        ("a: !!python/object:os.system x\n",
         r"^x\.yaml:1:4: not valid YAML: could not determine a constructor"),
        ("\ta: 1\n", r"^x\.yaml:1:1: not valid YAML: .*"),
    ],
)  # fmt: skip
def test_a_broken_document_is_one_line_naming_the_file_line_and_column(
    text: str, message: str
) -> None:
    with pytest.raises(FormatError, match=message) as caught:
        parse_yaml(text, "x.yaml", FormatError)
    assert "\n" not in str(caught.value)


def test_keys_merged_from_an_anchor_may_be_overridden() -> None:
    doc = parse_yaml("base: &b {a: 1, b: 2}\nthis:\n  <<: *b\n  b: 3\n", "x.yaml")
    assert doc["this"] == {"a": 1, "b": 3}


def test_dates_stay_text_for_each_format_to_read() -> None:
    assert parse_yaml("since: 2026-12-05\n", "x.yaml") == {"since": "2026-12-05"}


def test_only_true_and_false_are_booleans_as_in_yaml_1_2() -> None:
    doc = parse_yaml("a: true\nb: False\nc: off\nd: yes\noff: [phone]\nno: 1\n", "x.yaml")
    assert doc == {"a": True, "b": False, "c": "off", "d": "yes", "off": ["phone"], "no": 1}


def test_an_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"nope\.yaml: cannot read: No such file or directory$"):
        read_yaml(tmp_path / "nope.yaml", FormatError)


def test_a_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(FormatError, match=r"latin\.yaml: cannot read: .*utf-8"):
        read_yaml(path, FormatError)


def test_a_device_given_as_a_file_is_refused_after_the_limit_not_read_for_ever() -> None:
    with pytest.raises(FormatError, match=r"^/dev/zero: cannot read: larger than 16 MB$"):
        read_yaml(Path("/dev/zero"), FormatError)
