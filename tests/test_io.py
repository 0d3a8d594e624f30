"""Reading and writing stage files: malformed rows are reported with file and line; writes are atomic."""

import pytest

from valuedrift.io import DataError, atomic_dir, atomic_path, read_jsonl, write_jsonl


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text('{"prompt": [], "completion": []}\n\n{"prompt": [], "completion": \n')
    with pytest.raises(DataError, match=r"sft.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_missing_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "pref.jsonl"
    path.write_text('{"prompt": [], "chosen": [], "rejected": []}\n{"prompt": [], "chosen": []}\n')
    with pytest.raises(DataError, match=r"pref.jsonl:2: missing key\(s\) rejected"):
        read_jsonl(path, required=["prompt", "chosen", "rejected"])


def test_non_object_row(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: expected a JSON object"):
        read_jsonl(path)


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    # past the decoder's first block, a Latin-1 line: its "é" is the byte 0xe9, which no UTF-8 text holds
    good = '{"a": "é"}\n'.encode("utf-8") * 2000
    path.write_bytes(good + '{"a": "café"}\n'.encode("latin-1") + good)
    with pytest.raises(DataError, match=r"^\S*sft.jsonl:2001: not UTF-8 text \(byte 0xe9 at column 11\); "
                                        r"the file must be UTF-8"):
        read_jsonl(path)


def test_roundtrip(tmp_path):
    rows = [{"a": 1, "b": "é"}, {"a": 2, "b": ""}]
    assert write_jsonl(tmp_path / "r.jsonl", rows) == 2
    assert read_jsonl(tmp_path / "r.jsonl") == rows


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_failed_folder_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
