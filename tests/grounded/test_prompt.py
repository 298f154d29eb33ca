"""Prompt parsing, captions, and the class <-> token map / chunking the detector relies on."""

from __future__ import annotations

import numpy as np
import pytest

from grounded.detectors.prompt import build_caption, parse_prompt, tokenize_classes
from grounded.detectors.tiny import TINY_MAX_TEXT_LEN, build_tiny_detector

COCO = (
    "person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant, "
    "stop sign, parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe, "
    "backpack, umbrella, handbag, tie, suitcase, frisbee, skis, snowboard, sports ball, kite, baseball bat, "
    "baseball glove, skateboard, surfboard, tennis racket, bottle, wine glass, cup, fork, knife, spoon, "
    "bowl, banana, apple, sandwich, orange, broccoli, carrot, hot dog, pizza, donut, cake, chair, couch, "
    "potted plant, bed, dining table, toilet, tv, laptop, mouse, remote, keyboard, cell phone, microwave, "
    "oven, toaster, sink, refrigerator, book, clock, vase, scissors, teddy bear, hair drier, toothbrush"
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_detector(0).tokenizer


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("cat. dog", ["cat", "dog"]),
        ("cat, dog", ["cat", "dog"]),
        ("Cat . DOG.", ["cat", "dog"]),
        ("cat . dog .", ["cat", "dog"]),
        ("  Traffic   Light ..  cat,,", ["traffic light", "cat"]),
        ("cat. CAT, cat .dog", ["cat", "dog"]),
        (["cat", "Dog."], ["cat", "dog"]),
        (("cat. dog", "bird, Dog"), ["cat", "dog", "bird"]),
        ("Chat NOIR. Ünïcode Ölçü, 猫", ["chat noir", "ünïcode ölçü", "猫"]),
        ("cafe\u0301", ["café"]),  # decomposed accent is composed (NFC) before comparing
        ("hot\tdog\n. hot dog", ["hot dog"]),
    ],
)
def test_parse_prompt_normalises(prompt, expected):
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize("prompt", ["", "   ", " . , .. ", "\n\t", [], ["", "  ", "."]])
def test_parse_prompt_empty_is_a_clear_error(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        parse_prompt(prompt)


@pytest.mark.parametrize("prompt", [["cat", 3], ["cat", None], 42, None])
def test_parse_prompt_rejects_non_strings(prompt):
    with pytest.raises(ValueError, match="str"):
        parse_prompt(prompt)


def test_caption_is_each_phrase_followed_by_space_dot():
    assert build_caption(["cat", "traffic light"]) == "cat . traffic light ."


def test_token_class_map_matches_reference_tokenisation(tokenizer):
    classes = ["traffic light", "cat", "café", "猫", "zzyzx"]
    (caption,) = tokenize_classes(tokenizer, classes, max_tokens=256)
    # Same ids as tokenising the caption directly (what transformers' processor does).
    reference = tokenizer(build_caption(classes))["input_ids"]
    assert caption.input_ids[0].tolist() == reference
    ids = caption.input_ids[0].numpy()
    words = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert words[0] == "[CLS]" and words[-1] == "[SEP]"
    # Special tokens and the "." separators belong to no class; everything else to its phrase.
    assert (caption.token_class[[w in ("[CLS]", "[SEP]", ".") for w in words]] == -1).all()
    assert tokenizer.decode(ids[caption.token_class == 0]) == "traffic light"
    assert tokenizer.decode(ids[caption.token_class == 1]) == "cat"
    assert tokenizer.decode(ids[caption.token_class == 2]) == "cafe"  # BERT-uncased strips accents
    assert words[int(np.flatnonzero(caption.token_class == 3)[0])] == "[UNK]"  # not in the tiny vocab
    assert (caption.token_class == 4).sum() == 5  # z ##z ##y ##z ##x: any lowercase word tokenises
    assert caption.class_indexes.tolist() == [0, 1, 2, 3, 4]
    assert caption.attention_mask.sum() == caption.num_tokens


def test_long_prompt_is_split_into_chunks_that_fit_without_splitting_phrases(tokenizer):
    classes = parse_prompt(COCO)
    assert len(classes) == 80
    chunks = tokenize_classes(tokenizer, classes, max_tokens=TINY_MAX_TEXT_LEN)
    assert len(chunks) > 3
    assert np.concatenate([c.class_indexes for c in chunks]).tolist() == list(range(80))
    phrase_lengths = [len(tokenizer.tokenize(name)) for name in classes]
    start = 0
    for chunk in chunks:
        assert chunk.num_tokens <= TINY_MAX_TEXT_LEN
        ids = chunk.input_ids[0].numpy()
        for local, global_index in enumerate(chunk.class_indexes):
            # every phrase is whole inside its chunk
            assert tokenizer.decode(ids[chunk.token_class == local]) == classes[global_index]
        # greedy packing: the next class would not have fitted into this chunk
        end = start + len(chunk.class_indexes)
        if end < len(classes):
            assert chunk.num_tokens + phrase_lengths[end] + 1 > TINY_MAX_TEXT_LEN
        start = end


def test_eighty_coco_classes_fit_the_real_256_token_limit_in_one_pass(tokenizer):
    chunks = tokenize_classes(tokenizer, parse_prompt(COCO), max_tokens=256)
    assert len(chunks) == 1 and chunks[0].num_tokens <= 256


def test_single_phrase_over_the_limit_is_named(tokenizer):
    long_name = "a" * 40  # 40 WordPiece tokens in the tiny vocabulary
    with pytest.raises(ValueError, match=f"class '{long_name}' is 40 tokens long.*limit is 32"):
        tokenize_classes(tokenizer, ["cat", long_name], max_tokens=TINY_MAX_TEXT_LEN)


def test_no_classes_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="no classes"):
        tokenize_classes(tokenizer, [], max_tokens=256)


def test_new_lines_and_semicolons_separate_classes():
    assert parse_prompt("cat\ndog\r\ntraffic light; bird") == ["cat", "dog", "traffic light", "bird"]


@pytest.mark.parametrize("prompt", ["?!", " - ; ## ", ["--", "..."]])
def test_a_prompt_without_letters_or_digits_is_refused(prompt):
    with pytest.raises(ValueError, match="no letters or digits"):
        parse_prompt(prompt)


def test_pieces_without_letters_or_digits_name_no_class():
    assert parse_prompt("cat. ?!. dog") == ["cat", "dog"]
