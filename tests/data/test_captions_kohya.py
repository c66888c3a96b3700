"""sd-scripts' caption options (keep_tokens_separator, secondary_separator, wildcards) composed with shuffle, tag
dropout, keep_tokens and caption dropout, checked per seed against sd-scripts' algorithm transcribed below."""

from __future__ import annotations

import random
import re
from collections import Counter
from math import factorial
from pathlib import Path

import pytest

from lorakit.config.data_rules import check_data_options
from lorakit.config.schema import LorakitConfig
from lorakit.data.captions import CaptionRules, caption_rules_from, image_caption, vary, with_trigger
from lorakit.data.scan import ImageRecord
from lorakit.data.settings import DataSection

SEEDS = range(60)


def sd_scripts_caption(caption: str, rng: random.Random, *, sep: str = ",", shuffle: bool = False,
                       keep_tokens: int = 0, tag_dropout: float = 0.0, dropout: float = 0.0, wildcard: bool = False,
                       keep_sep: str = "", secondary: str | None = None, drop_then_shuffle: bool = False) -> str:
    """Transcribed from sd-scripts library/train_util.py, BaseDataset.process_caption (commit 48d368f), with `rng`
    where it calls the `random` module; no caption prefix/suffix, token warm-up or every-n-epochs dropout.

    Order: caption dropout → wildcard line and {a|b} choices (else the first line) → only with shuffle or tag
    dropout: split into fixed / flex / fixed-suffix tokens, shuffle flex, drop flex tags, join with ", " →
    secondary separator replaced by the caption separator. `drop_then_shuffle` swaps the two flex steps (lorakit's
    order, see test_shuffle_and_tag_dropout_have_sd_scripts_distribution)."""
    if dropout > 0 and rng.random() < dropout:
        return ""
    if wildcard:
        if "\n" in caption:
            caption = rng.choice(caption.split("\n"))
        left, right = "⦅", "⦆"
        while left in caption or right in caption:
            left, right = left + "⦅", right + "⦆"
        caption = caption.replace("{{", left).replace("}}", right)
        caption = re.sub(r"\{([^}]+)\}", lambda m: rng.choice(m.group(1).split("|")), caption)
        caption = caption.replace(left, "{").replace(right, "}")
    else:
        caption = caption.split("\n")[0]
    if shuffle or tag_dropout > 0:
        def tokens(text: str) -> list[str]:
            return [t.strip() for t in text.split(sep) if t.strip()]

        fixed, flex, suffix = [], [], []
        if keep_sep and keep_sep in caption:
            head, flex_text = caption.split(keep_sep, 1)
            if keep_sep in flex_text:
                flex_text, tail = flex_text.split(keep_sep, 1)
                suffix = tokens(tail)
            fixed, flex = tokens(head), tokens(flex_text)
        else:
            flex = [t.strip() for t in caption.strip().split(sep)]
            if keep_tokens > 0:
                fixed, flex = flex[:keep_tokens], flex[keep_tokens:]

        def drop(tags: list[str]) -> list[str]:
            return [t for t in tags if rng.random() >= tag_dropout] if tag_dropout > 0 else tags

        if drop_then_shuffle:
            flex = drop(flex)
        if shuffle:
            rng.shuffle(flex)
        if not drop_then_shuffle:
            flex = drop(flex)
        caption = ", ".join(fixed + flex + suffix)
    if secondary:
        caption = caption.replace(secondary, sep)
    return caption


def both(caption: str, rules: CaptionRules, seed: int, **sd: object) -> tuple[str, str]:
    """(lorakit's caption, sd-scripts') for one seed, each from its own generator with that seed."""
    mine = vary(with_trigger(caption, rules), rules, random.Random(seed))
    return mine, sd_scripts_caption(caption, random.Random(seed), **sd)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rules", "sd"), [
    (CaptionRules(shuffle=True, keep_tokens=1), dict(shuffle=True, keep_tokens=1)),
    (CaptionRules(tag_dropout_rate=0.4), dict(tag_dropout=0.4)),
    (CaptionRules(tag_dropout_rate=0.3, keep_tokens=2), dict(tag_dropout=0.3, keep_tokens=2)),
    (CaptionRules(shuffle=True, dropout_rate=0.3), dict(shuffle=True, dropout=0.3)),
    (CaptionRules(dropout_rate=0.5), dict(dropout=0.5)),
])
def test_existing_rules_match_sd_scripts(rules: CaptionRules, sd: dict) -> None:
    outputs = set()
    for seed in SEEDS:
        mine, theirs = both("girl, red hat, smile, outdoors, tree, sky", rules, seed, **sd)
        assert mine == theirs, seed
        outputs.add(mine)
    assert len(outputs) >= 2


def test_shuffle_and_tag_dropout_have_sd_scripts_distribution() -> None:
    """lorakit drops tags before shuffling (its draw order from before these options); sd-scripts shuffles first.
    Per seed lorakit equals the swapped transcription; over seeds both give each ordered subset of the k kept tags
    with probability p^(n-k) (1-p)^k / k! (independent drops, uniform order)."""
    rules = CaptionRules(shuffle=True, tag_dropout_rate=0.5)
    sd = dict(shuffle=True, tag_dropout=0.5)
    for seed in SEEDS:
        mine, _ = both("a, b, c", rules, seed)
        assert mine == sd_scripts_caption("a, b, c", random.Random(seed), drop_then_shuffle=True, **sd)
    n = 3000
    ours = Counter(vary("a, b, c", rules, random.Random(s)) for s in range(n))
    theirs = Counter(sd_scripts_caption("a, b, c", random.Random(s), **sd) for s in range(n))
    assert len(ours) == len(theirs) == 16  # 1 empty + 3 singles + 6 ordered pairs + 6 orderings of three
    for text in theirs:
        k = len(text.split(", ")) if text else 0
        expected = 0.5 ** 3 / factorial(k)
        assert abs(ours[text] / n - expected) < 0.025 and abs(theirs[text] / n - expected) < 0.025, text


def test_keep_tokens_separator_with_both_separators() -> None:
    caption = "1girl, solo ||| red hat, smile, outdoors, tree ||| masterpiece, best quality"
    rules = CaptionRules(shuffle=True, tag_dropout_rate=0.2, keep_tokens=3, keep_tokens_separator="|||")
    seen = set()
    for seed in SEEDS:
        mine, theirs = both(caption, rules, seed, shuffle=True, tag_dropout=0.2, keep_tokens=3, keep_sep="|||",
                            drop_then_shuffle=True)  # lorakit's flex order (same distribution, test above)
        assert mine == theirs
        tags = mine.split(", ")
        assert tags[:2] == ["1girl", "solo"] and tags[-2:] == ["masterpiece", "best quality"]
        assert set(tags[2:-2]) <= {"red hat", "smile", "outdoors", "tree"}
        seen.add(mine)
    assert len(seen) > 10


def test_keep_tokens_separator_once_and_absent() -> None:
    rules = CaptionRules(shuffle=True, keep_tokens=1, keep_tokens_separator="|||")
    for seed in SEEDS:
        mine, theirs = both("a, b ||| c, d, e", rules, seed, shuffle=True, keep_tokens=1, keep_sep="|||")
        assert mine == theirs and mine.startswith("a, b, ")
        mine, theirs = both("a, b, c, d, e", rules, seed, shuffle=True, keep_tokens=1, keep_sep="|||")
        assert mine == theirs and mine.startswith("a, ")  # no separator in it: keep_tokens applies


def test_keep_tokens_separator_stays_as_text_without_shuffle_or_tag_dropout() -> None:
    """sd-scripts splits only when shuffling or dropping tags; otherwise the caption keeps '|||' as text."""
    rules = CaptionRules(dropout_rate=0.2, keep_tokens_separator="|||")
    for seed in SEEDS:
        mine, theirs = both("a, b ||| c,d", rules, seed, dropout=0.2, keep_sep="|||")
        assert mine == theirs and mine in ("", "a, b ||| c,d")


def test_trigger_stays_first_before_the_fixed_part() -> None:
    rules = CaptionRules(trigger_word="zkz", shuffle=True, keep_tokens_separator="|||")
    for seed in SEEDS:
        tags = vary(with_trigger("a, b ||| c, d, e ||| f", rules), rules, random.Random(seed)).split(", ")
        assert tags[:3] == ["zkz", "a", "b"] and tags[-1] == "f" and sorted(tags[3:-1]) == ["c", "d", "e"]


def test_secondary_separator_keeps_joined_tags_together_through_shuffle() -> None:
    rules = CaptionRules(shuffle=True, tag_dropout_rate=0.1, secondary_separator=";;;")
    caption = "girl, red hat;;;blue scarf, smile, tree, sky"
    together = 0
    for seed in SEEDS:
        mine, theirs = both(caption, rules, seed, shuffle=True, tag_dropout=0.1, secondary=";;;",
                            drop_then_shuffle=True)
        assert mine == theirs and ";;;" not in mine
        tags = mine.split(", ")
        assert "red hat" not in tags and "blue scarf" not in tags  # never apart
        together += "red hat,blue scarf" in tags  # written back as the bare separator, as sd-scripts does
    assert together > 40  # present unless dropped (p = 0.1)


def test_secondary_separator_without_per_step_changes_is_written_back_once() -> None:
    rules = CaptionRules(trigger_word="zkz", secondary_separator=";;;")
    assert not rules.varies
    assert with_trigger("red hat;;;blue scarf, smile", rules) == "zkz, red hat,blue scarf, smile"
    assert sd_scripts_caption("red hat;;;blue scarf, smile", random.Random(0), secondary=";;;") == \
        "red hat,blue scarf, smile"
    varying = CaptionRules(shuffle=True, secondary_separator=";;;")
    assert with_trigger("a;;;b, c", varying) == "a;;;b, c"  # left for `vary`, after the shuffle


def test_wildcards_pick_among_options() -> None:
    rules = CaptionRules(wildcard=True)
    caption = "{red|blue|green} hat, {{literal}}, smile"
    picked = Counter()
    for seed in SEEDS:
        mine, theirs = both(caption, rules, seed, wildcard=True)
        assert mine == theirs
        colour = mine.split(" hat")[0]
        assert colour in ("red", "blue", "green") and mine.endswith(" hat, {literal}, smile")
        picked[colour] += 1
    assert set(picked) == {"red", "blue", "green"}
    shuffled = CaptionRules(wildcard=True, shuffle=True, keep_tokens=1)
    for seed in SEEDS:  # the choice is drawn before the shuffle
        mine, theirs = both("{a|b}, c, d, e", shuffled, seed, wildcard=True, shuffle=True, keep_tokens=1)
        assert mine == theirs


def test_multi_line_caption_file_uses_one_random_line(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    image.with_suffix(".txt").write_text("girl, red hat\n\n   boy, {blue|green} cap  \nsky\n", encoding="utf-8")
    record = ImageRecord(path=image, rel="a.png", folder=tmp_path, folder_name=tmp_path.name, repeats=1, is_reg=False,
                         size=(64, 64))
    rules = CaptionRules(wildcard=True, shuffle=True)
    text = image_caption(record, rules, None).text
    assert text == "girl, red hat\nboy, {blue|green} cap\nsky"  # read_caption: non-empty lines, stripped
    lines = Counter()
    for seed in SEEDS:
        mine, theirs = both(text, rules, seed, wildcard=True, shuffle=True)
        assert mine == theirs
        lines[frozenset(mine.split(", "))] += 1
    assert set(lines) == {frozenset({"girl", "red hat"}), frozenset({"boy", "blue cap"}),
                          frozenset({"boy", "green cap"}), frozenset({"sky"})}
    plain = image_caption(record, CaptionRules(), None).text  # wildcards off: the file's text as before
    assert plain.startswith("girl, red hat\n\n")


def test_trigger_word_goes_with_every_line() -> None:
    """sd-scripts' caption_prefix joins only the first line of a multi-line caption; lorakit's trigger word
    stays first on whichever line is picked."""
    rules = CaptionRules(trigger_word="zkz", wildcard=True)
    picked = {vary(with_trigger("one\ntwo", rules), rules, random.Random(s)) for s in SEEDS}
    assert picked == {"zkz, one", "zkz, two"}


def test_new_options_off_draw_as_before() -> None:
    """With the new options at their defaults `vary` draws exactly as lorakit did before them (git 8ce7685's
    vary: caption dropout, tag dropout, shuffle), so existing runs repeat bit for bit."""
    def before(caption: str, rules: CaptionRules, rng: random.Random) -> str:
        if rules.dropout_rate > 0 and rng.random() < rules.dropout_rate:
            return ""
        tags = rules.split(caption)
        kept, rest = tags[: rules.keep_tokens], tags[rules.keep_tokens:]
        if rules.tag_dropout_rate > 0:
            rest = [t for t in rest if rng.random() >= rules.tag_dropout_rate]
        if rules.shuffle:
            rng.shuffle(rest)
        return rules.join(kept + rest)

    rules = CaptionRules(shuffle=True, keep_tokens=1, dropout_rate=0.2, tag_dropout_rate=0.3)
    for seed in SEEDS:
        mine, old = random.Random(seed), random.Random(seed)
        assert vary("a, b, c, d, e, f", rules, mine) == before("a, b, c, d, e, f", rules, old)
        assert mine.random() == old.random()  # the generator is left in the same state


def test_caption_rules_read_every_caption_field() -> None:
    cfg = DataSection(trigger_word="t", caption_separator=";", shuffle_caption=True, keep_tokens=2,
                      caption_dropout_rate=0.1, caption_tag_dropout_rate=0.2, secondary_separator="&&",
                      enable_wildcard=True, keep_tokens_separator="|||", caption_extension=".caption")
    rules = caption_rules_from(cfg)
    assert (rules.secondary_separator, rules.wildcard, rules.keep_tokens_separator) == ("&&", True, "|||")
    assert (rules.separator, rules.keep_tokens, rules.extension, rules.trigger_word) == (";", 2, ".caption", "t")
    assert caption_rules_from(DataSection(enable_wildcard=True)).varies  # a wildcard changes per use: no text cache
    assert not caption_rules_from(DataSection()).varies


def findings(**data: object) -> dict[str, tuple[bool, str]]:
    cfg = LorakitConfig.model_validate({"data": data})
    return {f.key: (f.error, f.message) for f in check_data_options(cfg)}


def test_separator_checks() -> None:
    assert findings() == {}
    error, message = findings(secondary_separator=",,")["data.secondary_separator"]
    assert error and "caption_separator" in message and "';;;'" in message
    assert findings(secondary_separator=";;;") == {}
    error, message = findings(keep_tokens_separator="|||")["data.keep_tokens_separator"]
    assert not error and "shuffle_caption" in message
    assert findings(keep_tokens_separator="|||", shuffle_caption=True) == {}


def test_a_varied_caption_is_joined_with_comma_space_whatever_the_separator() -> None:
    # sd-scripts' process_caption: `", ".join(tokens)` after shuffle / tag dropout, for any caption_separator
    import random as _random

    from lorakit.data.captions import CaptionRules, vary

    text = vary("a;b;c", CaptionRules(separator=";", shuffle=True, keep_tokens=1), _random.Random(0))
    assert text.startswith("a, ") and sorted(text.split(", ")) == ["a", "b", "c"]
