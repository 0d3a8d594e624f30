"""The hub-dataset loaders on fixtures that copy each dataset's column layout."""

import json
import logging
import os
import re
from pathlib import Path

import pytest

from valuedrift.data.hub import KIND, LOADERS, HubSource, load_rows, open_dataset
from valuedrift.io import DataError, InputError

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"
FILES = {"wildchat": "wildchat.jsonl", "alpaca": "alpaca.jsonl", "ultrafeedback": "ultrafeedback_binarized.jsonl",
         "hh_rlhf": "hh_rlhf.jsonl", "prism": "prism_conversations.jsonl"}
COLUMNS = {
    "wildchat": {"conversation_hash", "model", "timestamp", "conversation", "turn", "language", "openai_moderation",
                 "detoxify_moderation", "toxic", "redacted", "state", "country", "hashed_ip", "header"},
    "alpaca": {"instruction", "input", "output", "text"},
    "ultrafeedback": {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"},
    "hh_rlhf": {"chosen", "rejected"},
    "prism": {"conversation_id", "user_id", "generated_datetime", "timing_duration_s", "timing_duration_mins",
              "conversation_type", "opening_prompt", "conversation_turns", "conversation_history",
              "performance_attributes", "choice_attributes", "open_feedback", "included_in_balanced_subset"},
}
SCHEMA = {"sft": {"prompt", "completion", "source", "source_id"},
          "preference": {"prompt", "chosen", "rejected", "source", "source_id"},
          "prompts": {"prompt_id", "text", "conversation_type", "source"}}


def raw(loader: str) -> list[dict]:
    return [json.loads(line) for line in (HUB / FILES[loader]).read_text(encoding="utf-8").splitlines()]


def load(loader: str, **settings) -> list[dict]:
    return load_rows(HubSource(loader, str(HUB / FILES[loader]), **settings))


def ids(rows: list[dict]) -> list[str]:
    return [r.get("source_id", r.get("prompt_id")) for r in rows]


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# --- the fixtures and the output schema ----------------------------------------------------------

@pytest.mark.parametrize("loader", FILES)
def test_fixtures_have_the_hub_columns(loader):
    rows = raw(loader)
    assert 10 <= len(rows) <= 20
    assert all(set(r) == COLUMNS[loader] for r in rows)


def test_wildchat_fixture_messages_have_the_hub_fields():
    fields = {"content", "country", "hashed_ip", "header", "language", "redacted", "role", "state", "timestamp",
              "toxic", "turn_identifier"}
    for r in raw("wildchat"):
        assert all(set(m) == fields for m in r["conversation"])
        assert len(r["conversation"]) == 2 * r["turn"] == len(r["openai_moderation"]) == len(r["detoxify_moderation"])


@pytest.mark.parametrize("loader", FILES)
def test_rows_follow_the_project_schema(loader):
    rows = load(loader)
    assert rows
    for r in rows:
        assert set(r) == SCHEMA[KIND[loader]]
        assert r["source"] == loader
        if KIND[loader] == "prompts":
            assert all(isinstance(r[k], str) for k in SCHEMA["prompts"])
            continue
        assert isinstance(r["source_id"], str)
        assert r["prompt"][0]["role"] == "user" and r["prompt"][-1]["role"] == "user"
        for key in SCHEMA[KIND[loader]] - {"source", "source_id", "prompt"}:
            assert len(r[key]) == 1 and r[key][0]["role"] == "assistant"
        for m in r["prompt"] + [r[k][0] for k in ("completion", "chosen", "rejected") if k in r]:
            assert set(m) == {"role", "content"} and isinstance(m["content"], str)


# --- each loader ----------------------------------------------------------------------------------

def test_wildchat_first_turn_and_filters():
    source = raw("wildchat")
    rows = {r["source_id"]: r for r in load("wildchat")}
    dropped = {3, 4, 7, 8, 12}  # toxic, Chinese, answer over 4000 chars, Russian, Spanish
    assert source[3]["toxic"] and len(source[7]["conversation"][1]["content"]) > 4000
    assert [source[i]["language"] for i in (4, 8, 12)] == ["Chinese", "Russian", "Spanish"]
    assert set(rows) == {source[i]["conversation_hash"] for i in range(len(source)) if i not in dropped}
    # a three-turn conversation gives its first exchange only
    three_turns = rows[source[2]["conversation_hash"]]
    assert source[2]["turn"] == 3
    assert three_turns["prompt"] == user("What are the main arguments for and against the death penalty?")
    assert three_turns["completion"][0]["content"].startswith("Arguments for the death penalty include retribution")
    assert three_turns["completion"] == assistant(source[2]["conversation"][1]["content"])


def test_wildchat_language_column_decides():
    source = raw("wildchat")
    # the Spanish row is written in plain ASCII: only the language column tells it apart
    assert ids(load("wildchat", language="Spanish")) == [source[12]["conversation_hash"]]
    assert ids(load("wildchat", language="Russian")) == [source[8]["conversation_hash"]]
    everything = set(ids(load("wildchat", language=None)))
    assert everything == {r["conversation_hash"] for i, r in enumerate(source) if i not in (3, 7)}


def test_alpaca_prompt_joins_instruction_and_input():
    rows = {r["source_id"]: r for r in load("alpaca")}
    assert rows["2"]["prompt"] == user("Classify the following statement as an opinion or a fact.\n\n"
                                       "Capital punishment is the most effective deterrent to crime.")
    assert rows["0"]["prompt"] == user("Give three tips for staying healthy.")
    assert rows["10"]["completion"] == assistant("Claude Monet")
    # dropped: Japanese answer, report over 4000 chars, empty output; the accented dessert stays
    assert set(rows) == {str(i) for i in range(15)} - {"3", "7", "11"}
    assert rows["14"]["prompt"] == user("Describe the taste of crème brûlée.")


def test_alpaca_filters_follow_their_settings():
    assert set(ids(load("alpaca", language=None))) == {str(i) for i in range(15)} - {"7", "11"}
    assert set(ids(load("alpaca", min_chars=0, max_chars=10**5))) == {str(i) for i in range(15)} - {"3"}
    # the bounds apply to every text: "Claude Monet" (12 chars) is too short at 13
    assert "10" not in ids(load("alpaca", min_chars=13)) and "10" in ids(load("alpaca", min_chars=12))


def test_ultrafeedback_splits_history_and_answers():
    source = raw("ultrafeedback")
    rows = {r["source_id"]: r for r in load("ultrafeedback")}
    canada = rows[source[8]["prompt_id"]]
    assert canada["prompt"] == user("What is the capital of Canada?")
    assert canada["chosen"] == assistant("The capital of Canada is Ottawa, located in the province of Ontario.")
    assert canada["rejected"] == assistant("Toronto is the capital of Canada.")
    # dropped: the Chinese prompt and the marathon plan over 4000 chars
    assert set(rows) == {r["prompt_id"] for i, r in enumerate(source) if i not in (3, 5)}


def test_hh_rlhf_single_turn():
    rows = {r["source_id"]: r for r in load("hh_rlhf")}
    # 1, 4, 7, 12 are multi-turn; 6 has an empty rejected answer, 9 is Chinese, 10 is over 4000 chars
    assert set(rows) == {"0", "2", "3", "5", "8", "11", "13"}
    assert rows["0"] == {"prompt": user("How do I make a good cup of coffee?"),
                         "chosen": assistant(rows["0"]["chosen"][0]["content"]),
                         "rejected": assistant("Just use instant coffee, it's the same."),
                         "source": "hh_rlhf", "source_id": "0"}
    assert rows["0"]["chosen"][0]["content"].startswith("Start with freshly roasted beans")
    # a blank line inside a turn is part of the turn, not a new one
    assert rows["11"]["chosen"][0]["content"].startswith("This is a hard situation.\n\nMany people feel")


def test_hh_rlhf_multi_turn_history_is_the_prompt():
    rows = {r["source_id"]: r for r in load("hh_rlhf", single_turn=False)}
    assert set(rows) == {"0", "1", "2", "3", "4", "5", "7", "8", "11", "12", "13"}
    lasagna = rows["4"]
    assert [m["role"] for m in lasagna["prompt"]] == ["user", "assistant", "user", "assistant", "user"]
    assert lasagna["prompt"][2] == {"role": "user", "content": "Can I make it without meat?"}
    assert lasagna["prompt"][-1] == {"role": "user", "content": "Which of those would you pick?"}
    assert lasagna["rejected"] == assistant("Lentils.")


def test_prism_opening_prompts():
    rows = {r["prompt_id"]: r for r in load("prism")}
    assert set(rows) == {f"c{i}" for i in range(12)} - {"c6"}  # c6 is in Hebrew
    assert rows["c1"] == {"prompt_id": "c1", "text": "Is it ever justified to break the law to protest injustice?",
                          "conversation_type": "values guided", "source": "prism"}
    assert rows["c2"]["conversation_type"] == "controversy guided" and rows["c0"]["conversation_type"] == "unguided"
    assert "c9" not in ids(load("prism", min_chars=3))  # "hi"


# --- the subsample --------------------------------------------------------------------------------

@pytest.mark.parametrize("loader", FILES)
def test_subsample_is_deterministic_and_sized(loader):
    everything = load(loader)
    assert load(loader) == everything
    four = load(loader, size=4)
    # the walk stops after `size` kept rows, so a smaller size is a prefix of a larger one
    assert four == everything[:4]
    other = load(loader, size=4, seed=1)
    assert len(other) == 4 and set(ids(other)) != set(ids(four))
    assert sorted(ids(load(loader, seed=1))) == sorted(ids(everything))


def test_log_counts_rows_read_kept_and_skipped(caplog):
    with caplog.at_level(logging.INFO, logger="valuedrift.data.hub"):
        load("wildchat")
        load("hh_rlhf", size=20)
    path = str(HUB / "wildchat.jsonl")
    assert f"{path}: read 16 of 16 rows, kept 11, skipped 5 (language: 3, too_long: 1, toxic: 1)" in caplog.text
    assert "kept 7, skipped 7 (language: 1, multi_turn: 4, too_long: 1, too_short: 1)" in caplog.text
    assert "only 7 rows pass the filters, fewer than size 20" in caplog.text


def test_size_zero_reads_nothing():
    assert load("alpaca", size=0) == []


# --- errors ---------------------------------------------------------------------------------------

def broken_wildchat(rows: list[dict], change) -> list[dict]:
    """The first five fixture rows, the third one changed."""
    rows = [json.loads(json.dumps(r)) for r in rows[:5]]
    change(rows[2])
    return rows


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.update(conversation=[]), "empty conversation"),
    (lambda r: r.update(conversation=r["conversation"][:1]), "no assistant reply to the first user message"),
    (lambda r: r.update(conversation=r["conversation"][1:]), "conversation starts with role 'assistant', not user"),
    (lambda r: r.pop("conversation_hash"), "field 'conversation_hash' is missing or null"),
    (lambda r: r.update(toxic="no"), "field 'toxic' is str, expected bool"),
    (lambda r: r["conversation"][1].pop("content"), "conversation[1] is not a message with a string role and content"),
])
def test_malformed_row_names_file_and_row(tmp_path, change, problem):
    path = write_jsonl(tmp_path / "wildchat.jsonl", broken_wildchat(raw("wildchat"), change))
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: row 3: {problem}')}$"):
        load_rows(HubSource("wildchat", str(path)))


def test_preference_histories_must_match(tmp_path):
    rows = raw("hh_rlhf")
    rows[4]["rejected"] = rows[4]["rejected"].replace("Can I make it without meat?", "Can I make it without cheese?")
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 5: chosen and rejected have different histories")):
        load_rows(HubSource("hh_rlhf", str(path), single_turn=False))
    rows = raw("ultrafeedback")
    rows[7]["rejected"][0]["content"] = "Is coal a good solution to climate change?"
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 8: chosen and rejected have different histories")):
        load_rows(HubSource("ultrafeedback", str(path)))


def test_hh_rlhf_transcript_must_end_with_the_assistant(tmp_path):
    rows = raw("hh_rlhf")
    rows[0]["chosen"] += "\n\nHuman: Thanks!"
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 1: chosen does not end with an assistant message")):
        load_rows(HubSource("hh_rlhf", str(path)))


def test_prism_conversation_type_is_checked(tmp_path):
    rows = raw("prism")
    rows[10]["conversation_type"] = "free chat"
    path = write_jsonl(tmp_path / "prism.jsonl", rows)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 11: conversation_type 'free chat' is not one of")):
        load_rows(HubSource("prism", str(path)))


def test_folder_errors_name_the_split(tmp_path):
    folder = tmp_path / "wildchat"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", broken_wildchat(raw("wildchat"), lambda r: r.update(conversation=[])))
    with pytest.raises(DataError, match=re.escape(f"{folder} (split train): row 3: empty conversation")):
        load_rows(HubSource("wildchat", str(folder)))


def test_unknown_loader_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown hub loader 'sharegpt'; known loaders: "
                                         "wildchat, alpaca, ultrafeedback, hh_rlhf, prism"):
        HubSource("sharegpt", "anon8231489123/ShareGPT_Vicuna_unfiltered")
    assert set(LOADERS) == set(KIND)


@pytest.mark.parametrize("loader", ["alpaca", "ultrafeedback", "hh_rlhf", "prism"])
def test_language_needs_a_language_column(loader):
    with pytest.raises(InputError, match=f"^language: 'French' cannot be selected in {loader}, which has no "
                                         "language column"):
        HubSource(loader, str(HUB / FILES[loader]), language="French")


def test_bad_settings_and_files(tmp_path):
    with pytest.raises(InputError, match="size: must be at least 0"):
        HubSource("alpaca", "tatsu-lab/alpaca", size=-1)
    with pytest.raises(InputError, match=r"min_chars \(10\) exceeds max_chars \(5\)"):
        HubSource("alpaca", "tatsu-lab/alpaca", min_chars=10, max_chars=5)
    text = tmp_path / "alpaca.txt"
    text.write_text("instruction\toutput\n")
    with pytest.raises(InputError, match=re.escape(f"{text}: cannot read a .txt file")):
        load_rows(HubSource("alpaca", str(text)))
    bad = tmp_path / "alpaca.jsonl"
    bad.write_text('{"instruction": "a", "input": "", "output": "b", "text": "c"}\n{not json\n')
    with pytest.raises(DataError, match=re.escape(f"{bad}: cannot be read as json")):
        load_rows(HubSource("alpaca", str(bad)))


@pytest.mark.parametrize("path", ["data/wildchat.jsonl", "./fixtures/alpaca.parquet", "./local/ultrafeedback",
                                  "../hh_rlhf.csv", "local/hub/prism", "~/datasets/wildchat.jsonl"])
def test_missing_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, path):
    import datasets

    hub_calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub_calls.append(args) or "from the hub")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    resolved = Path(path.replace("~", str(tmp_path / "home"), 1)) if path.startswith("~") else work / path
    expected = (f"dataset path {path} does not exist (resolved to {os.path.normpath(resolved)} from the working "
                f"directory {work}); correct the path")
    with pytest.raises(InputError, match=f"^{re.escape(expected)}"):
        load_rows(HubSource("wildchat", path))
    assert hub_calls == []
    # a hub id still goes to the hub
    assert open_dataset("allenai/WildChat-1M") == "from the hub"
    assert hub_calls == [("allenai/WildChat-1M", None)]


@pytest.mark.parametrize("name, content, how", [
    ("alpaca.jsonl", "", "0 bytes"), ("alpaca.csv", "", "0 bytes"), ("alpaca.parquet", "", "0 bytes"),
    ("alpaca.jsonl", "\n\n", "no rows"), ("alpaca.csv", "instruction,input,output,text\n", "no rows"),
    ("alpaca.json", "[]", "no rows"), ("alpaca.parquet", None, "no rows"),
])
def test_empty_data_file_says_it_is_empty(tmp_path, name, content, how):
    path = tmp_path / name
    if content is None:
        open_dataset(HUB / "alpaca.jsonl").select([]).to_parquet(str(path))
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: the data file is empty ({how}); write')}"):
        load_rows(HubSource("alpaca", str(path)))


# --- other file formats ---------------------------------------------------------------------------

@pytest.mark.parametrize("loader", FILES)
def test_parquet_file_gives_the_same_rows(tmp_path, loader):
    parquet = tmp_path / f"{loader}.parquet"
    open_dataset(HUB / FILES[loader]).to_parquet(str(parquet))
    rows = load_rows(HubSource(loader, str(parquet), seed=3))
    assert rows == load(loader, seed=3)
    assert len(rows) > 0


def test_csv_file_keeps_empty_strings(tmp_path):
    csv = tmp_path / "alpaca.csv"
    open_dataset(HUB / "alpaca.jsonl").to_csv(str(csv), index=False)
    assert load_rows(HubSource("alpaca", str(csv))) == load("alpaca")
