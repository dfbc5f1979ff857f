"""`grit eval --benchmark`: the official Flickr30k Entities and RefCOCO formats, prompts, outputs.

The checkpoint is a tiny random Kosmos-2 saved like microsoft/kosmos-2-patch14-224 (save_pretrained
of model and processor, no training_config.json, no location_grid: P = 32). Its scores mean
nothing; the tests check the readers against hand-written files, the prompts and the bookkeeping.
"""

from __future__ import annotations

import json

import pytest
import torch
from benchmark_data import FLICKR_VAL_QUERIES, HEIGHT, WIDTH, write_flickr30k, write_refcoco
from PIL import Image

from grit_pipeline.cli import main
from grit_pipeline.evalsets import flickr30k, refcoco
from grit_pipeline.locations import Box
from grit_pipeline.model.benchmark_eval import flickr_queries


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return write_flickr30k(tmp_path_factory.mktemp("flickr30k_entities"))


@pytest.fixture(scope="module")
def released_layout(tmp_path_factory):
    """A tiny Kosmos-2 in the released checkpoint's layout (model + processor files only)."""
    from grit_pipeline.model.presets import PRESETS, build_model
    from grit_pipeline.model.processor import build_processor, train_tokenizer

    torch.set_num_threads(1)
    captions = ["a man in a red shirt walks a brown dog", "the wooden box", "two children play"] * 4
    processor = build_processor(train_tokenizer(captions, 512), image_size=32)
    model = build_model(PRESETS["tiny"], processor)
    del model.config.location_grid  # the released config.json has none: P = 32
    out = tmp_path_factory.mktemp("kosmos-2-tiny")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    assert not (out / "training_config.json").exists()
    return out


def test_flickr_sentences_and_annotations_in_the_official_format(flickr):
    text, phrases = flickr30k.parse_sentence("[/EN#3/animals/other a dog] runs .")
    assert text == "a dog runs ." and phrases[0].types == ("animals", "other")
    annotation = flickr30k.read_annotation(flickr / "Annotations" / "1001.xml")
    # 1-based inclusive pixels (5, 5, 30, 40) of a 64 x 48 image -> (4/64, 4/48, 30/64, 40/48)
    assert annotation.boxes["1"] == (Box(4 / 64, 4 / 48, 30 / 64, 40 / 48),)
    assert len(annotation.boxes["3"]) == 2 and "4" not in annotation.boxes and "0" not in annotation.boxes
    # one <object> naming two phrases gives both the box
    assert flickr30k.read_annotation(flickr / "Annotations" / "1002.xml").boxes["12"] == (
        Box(0.0, 20 / 48, 1.0, 1.0),
    )


def test_flickr_queries_keep_the_sentence_before_the_phrase_and_a_space(flickr):
    queries = flickr_queries(str(flickr), "val", None, "any-box")
    assert len(queries) == FLICKR_VAL_QUERIES
    # The original's f"{prefix_caption} <phrase>...": a space after the prefix (which ends in one).
    assert queries[0].prompt == "<grounding> <phrase>A man</phrase>"
    assert queries[1].prompt == "<grounding>A man in  <phrase>a red shirt</phrase>"
    assert queries[2].prompt == "<grounding>A man in a red shirt walks  <phrase>a brown dog</phrase>"
    assert len(queries[2].truth) == 2  # any-box: both boxes of the dog
    merged = flickr_queries(str(flickr), "val", None, "merged-box")[2]
    assert merged.truth == (Box(34 / 64, 24 / 48, 60 / 64, 45 / 48),)  # their union


def test_phrase_offsets_index_the_stripped_sentence():
    text, phrases = flickr30k.parse_sentence("  [/EN#18/people A man] rides [/EN#19/other a bike] . \n")
    assert text == "A man rides a bike ."
    assert [text[p.start : p.end] for p in phrases] == ["A man", "a bike"] == [p.text for p in phrases]


def test_the_first_matching_entity_anywhere_in_the_generation_counts():
    from grit_pipeline.model.referring import box_of_phrase

    cat, dog, other_dog = (
        "<patch_index_0000><patch_index_0033>",
        "<patch_index_0066><patch_index_0099>",
        ("<patch_index_0500><patch_index_0600>"),
    )
    generated = (
        f"<grounding>A man walks <phrase>a dog</phrase><object>"  # the query's phrase, no box yet
        f"</object> near <phrase>a cat</phrase><object>{cat}</object> and then"  # past a </object>
        f" <phrase>a dog</phrase><object>{dog}</object> or <phrase>a dog</phrase><object>{other_dog}</object>"
    )
    # cell centres: index 66 is column 2, row 2; 99 is column 3, row 3 (grid 32)
    assert box_of_phrase(generated, "a dog", 32) == (2.5 / 32, 2.5 / 32, 3.5 / 32, 3.5 / 32)
    assert box_of_phrase(generated, " a cat ", 32) == (0.5 / 32, 0.5 / 32, 1.5 / 32, 1.5 / 32)


def test_generation_stops_only_at_the_end_of_the_sequence(released_layout):
    from transformers import AutoProcessor

    from grit_pipeline.locations import OBJECT_CLOSE
    from grit_pipeline.model.referring import GenerationConfig, stop_tokens

    tokenizer = AutoProcessor.from_pretrained(released_layout).tokenizer
    assert stop_tokens(tokenizer) == [tokenizer.eos_token_id]
    assert tokenizer.convert_tokens_to_ids(OBJECT_CLOSE) not in stop_tokens(tokenizer)
    assert GenerationConfig().max_new_tokens == 500  # the original's --max-len-b 500


def test_refcoco_pickles_and_instances_in_the_refer_layout(tmp_path):
    folder = write_refcoco(tmp_path, "refcoco")
    val = refcoco.read_split(folder, "refcoco", "val", folder / "train2014")
    assert [e.text for e in val] == ["man on the left", "left guy"]
    assert val[0].box == Box(5 / WIDTH, 5 / HEIGHT, 30 / WIDTH, 40 / HEIGHT)  # [x, y, w, h] -> corners
    assert val[0].image_path.endswith("train2014/COCO_train2014_000000000001.jpg")
    with pytest.raises(ValueError, match="testA, testB"):
        refcoco.read_split(folder, "refcoco", "test", folder / "train2014")
    gref = write_refcoco(tmp_path, "refcocog")
    assert [e.text for e in refcoco.read_split(gref, "refcocog", "test", gref / "train2014")] == ["a box"]


# The tiny random model never ends its sequence, so every query runs to the bound: 40 new tokens
# keep the test quick (the default, 500, is the original's and is checked above).
SHORT = ["--max-new-tokens", "40"]


def _eval(args, capsys) -> dict:
    assert main(["eval", *args, *SHORT, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_on_flickr30k_writes_predictions_metrics_and_misses(flickr, released_layout, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--checkpoint", str(released_layout), "--benchmark", "flickr30k-entities", "--data", str(flickr)]
    metrics = _eval([*args, "--out", str(out)], capsys)
    assert metrics["location_grid"] == 32 and metrics["protocol"] == "any-box" and metrics["metric"] == "R@1"
    assert set(metrics["splits"]) == {"val", "test"}
    val = metrics["splits"]["val"]
    lines = [json.loads(line) for line in (out / "val" / "predictions.jsonl").read_text().splitlines()]
    assert val["queries"] == len(lines) == FLICKR_VAL_QUERIES
    assert val["hits"] == sum(line["hit"] for line in lines) and val["accuracy"] == val["hits"] / 7
    assert lines[1]["prompt"] == "<grounding>A man in  <phrase>a red shirt</phrase>"
    assert all(line["generated"].startswith(line["prompt"]) for line in lines)
    low, high = val["ci95"]
    assert 0.0 <= low <= val["accuracy"] <= high <= 1.0
    if val["hits"] < val["queries"]:
        assert Image.open(out / "val" / "worst_misses.png").width > 0
    limited = _eval([*args, "--out", str(tmp_path / "o2"), "--split", "val", "--limit", "2"], capsys)
    assert list(limited["splits"]) == ["val"] and limited["splits"]["val"]["queries"] == 2


@pytest.mark.parametrize(
    ("dataset", "splits", "queries"),
    [
        ("refcoco", ["val", "testA", "testB"], [2, 1, 1]),
        ("refcoco+", ["val", "testA", "testB"], [1, 0, 1]),
        ("refcocog", ["val", "test"], [1, 1]),
    ],
)
def test_eval_on_refcoco_reports_each_split(dataset, splits, queries, released_layout, tmp_path, capsys):
    folder = write_refcoco(tmp_path, dataset)
    args = ["--checkpoint", str(released_layout), "--benchmark", dataset, "--data", str(folder)]
    for split, count in zip(splits, queries):
        run_args = [*args, "--split", split, "--out", str(tmp_path / "out")]
        if count == 0:
            assert main(["eval", *run_args]) == 2
            assert "no queries" in capsys.readouterr().err
            continue
        metrics = _eval(run_args, capsys)
        assert metrics["splits"][split]["queries"] == count
        line = json.loads((tmp_path / "out" / split / "predictions.jsonl").read_text().splitlines()[0])
        assert line["prompt"].startswith("<grounding><phrase>") and line["prompt"].endswith("</phrase>")


def test_eval_names_a_missing_benchmark_file_in_one_line(tmp_path, released_layout, capsys):
    args = ["eval", "--checkpoint", str(released_layout), "--benchmark", "refcoco", "--data", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instances.json" in err


def test_a_hub_id_that_cannot_be_reached_is_one_line(flickr, capsys):
    """The released model by hub id: offline here (HF_HUB_OFFLINE), so the error must say so in one line."""
    args = ["eval", "--checkpoint", "microsoft/kosmos-2-patch14-224", "--benchmark", "flickr30k-entities"]
    assert main([*args, "--data", str(flickr), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("grit eval: error: cannot load the checkpoint microsoft/kosmos-2")
    )
