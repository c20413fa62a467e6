"""The organization directory's pure parts (aggregators/directory/organizations.py): topic records
and CSV imports."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregators.directory.organizations import DirectoryError, directory_record, read_csv

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
valid_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=128)


# -- directory_record ------------------------------------------------------------------------


def test_record_with_a_name() -> None:
    value = orjson.dumps({"organization_id": "acme-1", "name": "Acme Corp"})
    assert directory_record(b"acme-1", value) == ("acme-1", "Acme Corp")


def test_record_id_comes_from_the_value_not_the_key() -> None:
    value = orjson.dumps({"organization_id": "acme", "name": "Acme"})
    assert directory_record(None, value) == ("acme", "Acme")
    assert directory_record(b"other", value) == ("acme", "Acme")


def test_record_extra_fields_ignored() -> None:
    value = orjson.dumps({"organization_id": "o:1", "name": "One", "plan": "gold"})
    assert directory_record(b"o:1", value) == ("o:1", "One")


def test_tombstone_with_a_valid_key() -> None:
    assert directory_record(b"acme", None) == ("acme", None)
    assert directory_record(b"A.b_c:d-9", None) == ("A.b_c:d-9", None)


@pytest.mark.parametrize(
    "key",
    [None, b"", b"has space", b"slash/y", b"x" * 129, b"\xff\xfe", "caf\u00e9".encode()],
)
def test_tombstone_with_an_invalid_key(key: bytes | None) -> None:
    assert directory_record(key, None) is None


def test_tombstone_key_of_128_characters_is_valid() -> None:
    assert directory_record(b"x" * 128, None) == ("x" * 128, None)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[]",
        b'"acme"',
        b"42",
        b'[{"organization_id": "acme", "name": "Acme"}]',
        b"{}",
        b'{"name": "Acme"}',
        b'{"organization_id": "acme"}',
        b'{"organization_id": "acme", "name": ""}',
        b'{"organization_id": "acme", "name": null}',
        b'{"organization_id": "acme", "name": 7}',
        b'{"organization_id": "acme", "name": ["Acme"]}',
        b'{"organization_id": 7, "name": "Acme"}',
        b'{"organization_id": "", "name": "Acme"}',
        b'{"organization_id": "has space", "name": "Acme"}',
        b'{"organization_id": null, "name": "Acme"}',
    ],
)
def test_malformed_records(value: bytes) -> None:
    assert directory_record(b"acme", value) is None


def test_record_id_too_long() -> None:
    value = orjson.dumps({"organization_id": "x" * 129, "name": "Long"})
    assert directory_record(None, value) is None


@given(org=valid_ids, name=st.text(min_size=1, max_size=50))
def test_record_property_valid(org: str, name: str) -> None:
    assert directory_record(org.encode(), orjson.dumps({"organization_id": org, "name": name})) == (
        org,
        name,
    )
    assert directory_record(org.encode(), None) == (org, None)


@given(org=st.text(min_size=1, max_size=20).filter(lambda s: any(c not in ID_ALPHABET for c in s)))
def test_record_property_invalid_ids(org: str) -> None:
    assert directory_record(b"k", orjson.dumps({"organization_id": org, "name": "N"})) is None
    assert directory_record(org.encode(), None) is None


# -- read_csv --------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orgs.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_header(tmp_path: Path) -> None:
    path = write(tmp_path, "organization_id,name\nacme,Acme Corp\nbeta,Beta Ltd\n")
    assert read_csv(path) == {"acme": "Acme Corp", "beta": "Beta Ltd"}


def test_csv_without_header(tmp_path: Path) -> None:
    assert read_csv(write(tmp_path, "acme,Acme Corp\n")) == {"acme": "Acme Corp"}


def test_csv_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "\norganization_id,name\n\nacme,Acme\n\n\nbeta,Beta\n")
    # the header only counts as one on line 1; here line 1 is blank, so line 2 is a row
    assert read_csv(path) == {"organization_id": "name", "acme": "Acme", "beta": "Beta"}


def test_csv_blank_lines_and_header(tmp_path: Path) -> None:
    path = write(tmp_path, "organization_id,name\n\nacme,Acme\n\nbeta,Beta\n\n")
    assert read_csv(path) == {"acme": "Acme", "beta": "Beta"}


def test_csv_whitespace_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "  acme ,  Acme Corp  \n")
    assert read_csv(path) == {"acme": "Acme Corp"}


def test_csv_quoted_name_with_a_comma(tmp_path: Path) -> None:
    path = write(tmp_path, 'acme,"Acme, Inc."\n')
    assert read_csv(path) == {"acme": "Acme, Inc."}


def test_csv_later_row_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "acme,Old\nacme,New\n")
    assert read_csv(path) == {"acme": "New"}


def test_csv_empty_file(tmp_path: Path) -> None:
    assert read_csv(write(tmp_path, "")) == {}
    assert read_csv(write(tmp_path, "organization_id,name\n")) == {}


def test_csv_no_trailing_newline(tmp_path: Path) -> None:
    assert read_csv(write(tmp_path, "acme,Acme")) == {"acme": "Acme"}


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        ("acme\n", 1),
        ("acme,Acme,extra\n", 1),
        ("organization_id,name\nacme,Acme\nbad id,Name\n", 3),
        ("acme,Acme\nbeta,\n", 2),
        ("acme,Acme\nbeta,   \n", 2),
        ("acme,Acme\n\n,Nameless\n", 3),
        ("acme,Acme\n" + "x" * 129 + ",Long\n", 2),
        ("acme,Acme\nbeta/2,Beta\n", 2),
    ],
)
def test_csv_bad_rows(tmp_path: Path, text: str, bad_line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DirectoryError) as raised:
        read_csv(path)
    assert str(raised.value).startswith(f"{path}:{bad_line}: ")
    assert isinstance(raised.value, ValueError)


@given(
    rows=st.dictionaries(
        valid_ids.filter(lambda s: s != "organization_id"),
        st.text(alphabet="abc XYZ-.'", min_size=1, max_size=20).filter(lambda s: s.strip()),
        max_size=10,
    ),
    header=st.booleans(),
)
def test_csv_property(
    tmp_path_factory: pytest.TempPathFactory, rows: dict[str, str], header: bool
) -> None:
    path = tmp_path_factory.mktemp("csv") / "orgs.csv"
    lines = ["organization_id,name"] if header else []
    lines += [f"{org},{name}" for org, name in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_csv(path) == {org: name.strip() for org, name in rows.items()}
