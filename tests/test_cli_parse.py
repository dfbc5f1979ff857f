"""`grit parse` end to end, in-process through the real entry point."""

import json

from grit_pipeline.cli import main


def test_json_lines_have_the_documented_keys(capsys):
    assert main(["parse", "--json", "a dog chasing a red ball", "hope and a cat"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["caption"] for r in records] == ["a dog chasing a red ball", "hope and a cat"]
    first = records[0]
    assert set(first) == {"caption", "noun_chunks", "ref_exps", "dropped"}
    assert first["noun_chunks"][0] == {"start": 0, "end": 5, "text": "a dog"}
    assert first["ref_exps"][0]["chunk"] == {"start": 0, "end": 5, "text": "a dog"}
    assert first["ref_exps"][0]["text"] == "a dog chasing a red ball"
    assert {d["reason"] for d in first["dropped"]} == {"contained"}
    assert records[1]["dropped"] == [{"start": 0, "end": 4, "text": "hope", "reason": "abstract_noun"}]


def test_table_output_and_rejects(capsys):
    assert main(["parse", "a dog chasing a red ball", "   "]) == 0
    out = capsys.readouterr().out
    assert "'a dog' " in out and "(kept)" in out and "(contained)" in out
    assert "rejected: empty_caption" in out


def test_missing_pipeline_is_one_line_without_traceback(capsys):
    assert main(["parse", "--spacy-model", "no_such_pipeline", "a dog"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "pip install no_such_pipeline" in err


def test_unknown_flags_are_errors(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["parse", "--jsn", "a dog"])
    assert exc.value.code == 2
