"""A seeded, generic, English-like corpus for pretraining the tiny base models.

The tiny models must know the language of the demo tasks (names, cities, jobs, days, everyday
topics) without knowing the tasks: the demo shows real learning only if the base model scores
near zero on them until it is fine-tuned. So this corpus talks about the same people, places and
topics as the bundled datasets, in sentences of its own, and never uses the task formats: no
instruction lines ("Extract the person's full name."), no ``Text:`` / ``Name:`` / ``Topic:`` /
``Summary:`` labels, no colons at all.

Every document is about one person, named again and again (full name mostly, first name
sometimes), and news-like paragraphs restate who did what, where and when. Within the short
pretraining budget that is what teaches the model to copy names and facts from its context,
which LoRA fine-tuning then builds on (measured: name extraction after the default 300-step SFT
went from 0.03 to 1.0 exact match once the base model could copy).

Everything here is pure Python and deterministic for a seed (``random.Random`` with a string
seed is stable across runs and platforms).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from llmops_workers import vocabulary

__all__ = [
    "TOKENIZER_CORPUS_SEED",
    "bundled_datasets_dir",
    "dataset_texts",
    "generic_documents",
    "iter_generic_documents",
    "tokenizer_training_texts",
]

TOKENIZER_CORPUS_SEED = 0
"""The corpus seed of the tokenizer's training text: fixed, so every tiny model shares one
tokenizer whatever its own seed."""

# --- vocabularies: the demo tasks' words (llmops_workers.vocabulary) first, then more --------

FIRST_NAMES: tuple[str, ...] = (
    *vocabulary.FIRST_NAMES,
    "Bruno", "Chloe", "Diego", "Freya", "George", "Hanna", "Isaac", "Jonas", "Karin", "Luis",
    "Marta", "Nora", "Olga", "Pablo", "Ruth", "Simon", "Tara", "Umar", "Vera", "Walter", "Yara",
    "Ahmed", "Bella", "Carl", "Dora", "Erik", "Fatima", "Greta", "Henry", "Ingrid",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    *vocabulary.LAST_NAMES,
    "Adams", "Baker", "Castro", "Dalton", "Engel", "Fontaine", "Gallo", "Horvat", "Ivanova",
    "Jovanovic", "Kovacs", "Lindqvist", "Martins", "Nowak", "Ortega", "Price", "Quinn", "Reyes",
    "Sato", "Torres", "Ueda", "Vargas", "Wagner", "Young", "Zimmer", "Bauer", "Carter", "Dunn",
    "Ellis", "Ford",
)  # fmt: skip
CITIES: tuple[str, ...] = (
    *vocabulary.CITIES,
    "Warsaw", "Budapest", "Helsinki", "Stockholm", "Copenhagen", "Brussels", "Amsterdam", "Zurich",
    "Milan", "Naples", "Seville", "Valencia", "Munich", "Hamburg", "Lyon", "Krakow", "Riga",
    "Tallinn", "Geneva", "Bergen",
)  # fmt: skip
JOBS: tuple[str, ...] = (
    *vocabulary.JOBS,
    "engineer", "librarian", "gardener", "plumber", "architect", "journalist", "pharmacist",
    "carpenter", "musician", "photographer", "tailor", "mechanic", "scientist", "student", "driver",
    "banker", "actor", "fisherman",
)  # fmt: skip
DAYS: tuple[str, ...] = vocabulary.DAYS
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
PARTS_OF_DAY: tuple[str, ...] = ("morning", "afternoon", "evening", "night")
NUMBERS: tuple[str, ...] = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve",
    "twenty", "thirty", "forty", "fifty", "a hundred", "two hundred",
)  # fmt: skip
# Things people talk about, by the field they belong to: the demo's topic words. The corpus says
# which field a thing belongs to in plain sentences (world knowledge, as any pretraining text has),
# never in the classification task's format.
TOPICS: dict[str, tuple[str, ...]] = vocabulary.TOPIC_KEYWORDS
THINGS: tuple[str, ...] = tuple(thing for things in TOPICS.values() for thing in things)
PLACES: tuple[str, ...] = (
    "market", "station", "library", "museum", "harbour", "park", "school", "hospital",
    "theatre", "bakery", "cafe", "square", "office", "factory", "church", "hotel", "garden",
    "beach", "bookshop", "town hall",
)  # fmt: skip
PAST_ACTIONS: tuple[str, ...] = (
    *vocabulary.ACTIONS,
    "baked a cake", "ran a marathon", "fixed an old clock", "learned to swim",
    "visited an old friend", "found a lost cat", "sang in a choir", "taught a cooking class",
    "climbed a hill", "cleaned the river bank", "bought a piano", "moved to a new flat",
    "organised a concert", "hosted a dinner",
)  # fmt: skip
REASONS: tuple[str, ...] = (
    *vocabulary.REASONS,
    "for the first time", "with great care",
)  # fmt: skip
ADJECTIVES: tuple[str, ...] = (
    "quiet", "busy", "bright", "cold", "warm", "small", "large", "old", "new", "friendly",
    "famous", "simple", "strange", "lovely", "careful", "happy", "tired", "early", "late",
    "long", "short", "green", "blue", "red", "yellow", "cheerful", "calm", "noisy",
)  # fmt: skip
WEATHER: tuple[str, ...] = (
    "sunny", "rainy", "cloudy", "windy", "foggy", "mild", "cold", "hot", "stormy", "clear",
)  # fmt: skip
ANIMALS: tuple[str, ...] = (
    "dog", "cat", "horse", "bird", "fox", "rabbit", "goat", "duck", "owl", "fish",
)  # fmt: skip
FOODS: tuple[str, ...] = (
    "apples", "bread", "cheese", "soup", "rice", "fish", "eggs", "tea", "coffee", "cake",
    "oranges", "honey", "beans", "potatoes", "olives",
)  # fmt: skip
FEELINGS: tuple[str, ...] = (
    "happy", "proud", "surprised", "nervous", "calm", "excited", "curious", "grateful",
)  # fmt: skip
VERBS_PRESENT: tuple[str, ...] = (
    "reads the newspaper", "walks the dog", "cooks dinner", "plays the piano",
    "visits the market", "rides a bicycle", "writes letters", "waters the garden",
    "meets old friends", "goes swimming", "takes photos", "listens to the radio",
)  # fmt: skip


class _Person:
    """A named person with a job and a home city."""

    def __init__(self, rng: random.Random) -> None:
        self.first = rng.choice(FIRST_NAMES)
        self.last = rng.choice(LAST_NAMES)
        self.job = rng.choice(JOBS)
        self.city = rng.choice(CITIES)
        self.pronoun = rng.choice(("he", "she", "they"))

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def subject(self) -> str:
        return self.pronoun.capitalize()

    def verb(self, singular: str, plural: str) -> str:
        """The verb form that agrees with the pronoun (they work, she works)."""
        return plural if self.pronoun == "they" else singular

    def mention(self, rng: random.Random) -> str:
        """The full name mostly, sometimes the first name alone."""
        return self.full if rng.random() < 0.7 else self.first


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _plural(noun: str) -> str:
    return noun[:-3] + "men" if noun.endswith("man") else noun + "s"


def _pick(rng: random.Random, sentences: list[str], low: int, high: int) -> list[str]:
    return rng.sample(sentences, min(len(sentences), rng.randint(low, high)))


# Every document is about one person, who is named again and again (and other people only in
# passing). That is what teaches the model, within a short pretraining, to copy a name it has
# seen earlier in the text; fine-tuning for extraction and summaries builds on it. (Paragraphs
# that mix several people, or lists of names, did not teach it in the same budget.)


def _profile_paragraph(rng: random.Random, p: _Person) -> str:
    """Who the person is and what they do."""
    intro = rng.choice(
        (
            f"{p.full} is {_a(p.job)} who lives in {p.city}.",
            f"{p.full} grew up in {p.city} and later became {_a(p.job)}.",
            f"This is a story about {_a(p.job)} called {p.full}.",
            f"Everyone in {p.city} knows {p.full}, the {rng.choice(ADJECTIVES)} {p.job}.",
            f"For many years {p.full} has worked as {_a(p.job)} in {p.city}.",
            f"The {p.job} in this story is {p.full} from {p.city}.",
        )
    )
    sentences = [
        f"Every {rng.choice(DAYS)} {p.mention(rng)} {rng.choice(VERBS_PRESENT)}.",
        f"Friends say {p.mention(rng)} is {_a(rng.choice(ADJECTIVES))} {p.job}.",
        f"In {rng.choice(MONTHS)} {p.mention(rng)} went to {rng.choice(CITIES)} by train.",
        f"A photo of {p.full} hangs in the {rng.choice(PLACES)}.",
        f"{p.mention(rng)} likes {rng.choice(FOODS)} and {rng.choice(FOODS)}.",
        f"{p.subject} {p.verb('has', 'have')} {_a(rng.choice(ANIMALS))} and a small garden.",
        f"The {p.job} {p.full} was {rng.choice(FEELINGS)} on {rng.choice(DAYS)}.",
        f"Everyone at the {rng.choice(PLACES)} knows {p.full}.",
        f"Ask anyone at the {rng.choice(PLACES)} about the {p.job} and they will say {p.full}.",
    ]
    return " ".join([intro, *_pick(rng, sentences, 3, 6)])


def _event_paragraph(rng: random.Random, p: _Person) -> str:
    """A short news-like report of something the person did: who, what, where and when."""
    day, city, action = rng.choice(DAYS), rng.choice(CITIES), rng.choice(PAST_ACTIONS)
    opening = rng.choice(
        (
            f"Last {day} in {city}, {p.full} {action}.",
            f"The people of {city} were pleased when {p.full} {action}.",
            f"It was {day} when {p.full} {action} in {city}.",
            f"News came from {city} that {p.full} {action}.",
        )
    )
    sentences = [
        f"The {p.job} did it {rng.choice(REASONS)}.",
        f"About {rng.choice(NUMBERS)} people came to see {p.mention(rng)}.",
        f"The weather was {rng.choice(WEATHER)} that {rng.choice(PARTS_OF_DAY)}.",
        f"A reporter asked {p.mention(rng)} about it, and {p.pronoun} smiled.",
        f"{p.full} plans to do it again in {rng.choice(MONTHS)}.",
        f"{p.subject} said it was {rng.choice(ADJECTIVES)} work.",
    ]
    # A recap restates who, what, where and when in another order: practice in carrying facts
    # over from earlier in a text.
    recap = rng.choice(
        (
            f"So on {day}, in {city}, {p.full} {action}.",
            f"That {day} in {city} is remembered because {p.full} {action}.",
            f"In short, it was in {city}, on {day}, that {p.full} {action}.",
        )
    )
    return " ".join([opening, *_pick(rng, sentences, 1, 3), recap])


def _topic_paragraph(rng: random.Random, p: _Person) -> str:
    """Everyday talk about things and the fields they belong to (sports, technology, food,
    travel and more)."""
    topic = rng.choice(tuple(TOPICS))
    a, b = rng.sample(TOPICS[topic], 2)
    sentences = [
        f"{p.full} follows {topic} closely, from the {a} to the {b}.",
        f"Anyone who likes {topic} has heard about the {a}.",
        f"The {a} was the biggest {topic} story in {p.city} this week.",
        f"{p.mention(rng)} has always loved {topic}, and the {b} most of all.",
        f"{p.full} spent an hour looking at the {a}.",
        f"{p.mention(rng)} prefers the {b} to the {a}.",
        f"In {p.city} the {a} is more popular than the {b}, says {p.full}.",
        f"A new {b} arrived on {rng.choice(DAYS)}, and {p.mention(rng)} thought it was "
        f"{rng.choice(ADJECTIVES)}.",
        f"{p.full} bought {_a(rng.choice(ADJECTIVES))} {b} in {rng.choice(CITIES)}.",
        f"The {a} was {rng.choice(ADJECTIVES)} this year.",
        f"{p.mention(rng)} often talks about the {a} with friends.",
    ]
    return " ".join(_pick(rng, sentences, 3, 5))


def _place_paragraph(rng: random.Random, p: _Person) -> str:
    """The person's city, its places and its weather."""
    place = rng.choice(PLACES)
    sentences = [
        f"{p.city} is {_a(rng.choice(ADJECTIVES))} city with {_a(rng.choice(ADJECTIVES))} {place}.",
        f"In {rng.choice(MONTHS)} the weather in {p.city} is often {rng.choice(WEATHER)}.",
        f"{p.full} walks past the {place} on {rng.choice(DAYS)}.",
        f"It takes {p.mention(rng)} {rng.choice(NUMBERS)} minutes to walk to the "
        f"{rng.choice(PLACES)}.",
        f"Many {_plural(rng.choice(JOBS))} live near the {place}.",
        f"On {rng.choice(DAYS)} {rng.choice(PARTS_OF_DAY)}s the {place} is "
        f"{rng.choice(('quiet', 'busy', 'full of people', 'almost empty'))}.",
    ]
    return " ".join(_pick(rng, sentences, 3, 5))


def _diary_paragraph(rng: random.Random, p: _Person) -> str:
    """A first-person diary entry about a day spent with the person."""
    sentences = [
        f"I met {p.full} at the {rng.choice(PLACES)} in {p.city}.",
        f"We had {rng.choice(FOODS)} and talked about the {rng.choice(THINGS)}.",
        f"It was {rng.choice(WEATHER)}, so {p.mention(rng)} and I stayed inside for a while.",
        f"{p.mention(rng)} told me about {_a(rng.choice(ANIMALS))} that lives near the river.",
        f"Later I wrote a long letter to {p.full}.",
        f"I felt {rng.choice(FEELINGS)} when I walked home.",
    ]
    day = f"{rng.choice(DAYS)} was {_a(rng.choice(ADJECTIVES))} day."
    return " ".join([day, *_pick(rng, sentences, 3, 5)])


def _dialogue_paragraph(rng: random.Random, p: _Person) -> str:
    """Quoted speech, so the model sees quotes, questions and who said what."""
    q = _Person(rng)
    thing = rng.choice(THINGS)
    lines = [
        f'"Have you seen the {thing}?" asked {p.full}.',
        f'"Yes, on {rng.choice(DAYS)} in {rng.choice(CITIES)}," said {q.full}.',
        f'"It was {rng.choice(ADJECTIVES)}," {q.first} added.',
        f'{p.first} laughed and said, "Then I will go there too."',
        f"That was the last thing {p.full} said that {rng.choice(PARTS_OF_DAY)}.",
    ]
    return " ".join(lines[: rng.randint(2, 5)])


_PARAGRAPHS: tuple[Callable[[random.Random, _Person], str], ...] = (
    _profile_paragraph,
    _profile_paragraph,
    _event_paragraph,
    _topic_paragraph,
    _place_paragraph,
    _diary_paragraph,
    _dialogue_paragraph,
)
_TITLES: tuple[str, ...] = (
    "A week in {city}",
    "News from {city}",
    "Notes on {day}",
    "About {name}",
    "The {adjective} {job}",
)


def _document(rng: random.Random) -> str:
    """Two to four paragraphs about one person (about one training row), sometimes under a
    title line (so newlines are seen too)."""
    person = _Person(rng)
    paragraphs = [rng.choice(_PARAGRAPHS)(rng, person) for _ in range(rng.randint(2, 4))]
    if rng.random() < 0.3:
        title = rng.choice(_TITLES).format(
            city=person.city,
            day=rng.choice(DAYS),
            name=person.full,
            adjective=rng.choice(ADJECTIVES).capitalize(),
            job=person.job,
        )
        paragraphs.insert(0, title)
    return "\n".join(paragraphs)


def iter_generic_documents(seed: int, *, split: str = "train") -> Iterator[str]:
    """An endless stream of documents; the same ``seed`` and ``split`` give the same stream."""
    rng = random.Random(f"llmops-generic-corpus:{seed}:{split}")
    while True:
        yield _document(rng)


def generic_documents(seed: int, count: int, *, split: str = "train") -> list[str]:
    """The first ``count`` documents of the stream for ``seed`` and ``split``.

    Use different splits (``"train"``, ``"eval"``) for text a model trains on and text it is
    measured on.
    """
    stream = iter_generic_documents(seed, split=split)
    return [next(stream) for _ in range(count)]


def bundled_datasets_dir() -> Path:
    """``config/datasets`` of the source checkout this package lives in (may not exist when
    the package is installed on its own)."""
    return Path(__file__).resolve().parents[2] / "config" / "datasets"


def dataset_texts(datasets_dir: Path | None = None) -> list[str]:
    """Every string value of every row of the ``*.jsonl`` files in ``datasets_dir``, in a
    stable order (files sorted by name, keys sorted), for the tokenizer to learn task words."""
    directory = bundled_datasets_dir() if datasets_dir is None else datasets_dir
    if not directory.is_dir():
        return []
    texts: list[str] = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if isinstance(row, dict):
                texts.extend(str(row[key]) for key in sorted(row) if isinstance(row[key], str))
    return texts


def tokenizer_training_texts(
    datasets_dir: Path | None = None, *, documents: int = 4000
) -> list[str]:
    """What the tokenizer is trained on: a fixed-seed generic corpus plus the bundled datasets'
    text, so that both the pretraining text and the task prompts tokenize into few tokens."""
    return [
        *generic_documents(TOKENIZER_CORPUS_SEED, documents, split="tokenizer"),
        *dataset_texts(datasets_dir),
    ]
