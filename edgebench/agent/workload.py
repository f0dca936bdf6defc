"""The fixed, versioned prompt corpus. Prompts are cut from it by token count, so the
same n_prompt gives the same text on every device and every run."""

from __future__ import annotations

from collections.abc import Callable

CORPUS_VERSION = "1"
CORPUS = (
    "Small language models now run on the devices people already own: single board "
    "computers, phones, laptops and the old desktop under the desk. How fast they run "
    "depends on the memory bandwidth, the number of cores, the clock the chip can hold "
    "when it is hot, and the engine that schedules the work. A benchmark that only "
    "reports one number hides most of that story. This text is the fixed prompt that "
    "edgebench feeds to every engine, cut to the number of tokens a test asks for, so "
    "that the first token, the time between tokens and the energy of each phase can be "
    "compared from one device to the next. "
)


def prompt_tokens(tokenize: Callable[[str], list[int]], n_prompt: int) -> list[int]:
    """The first n_prompt tokens of the corpus (repeated as often as needed)."""
    if n_prompt < 1:
        raise ValueError("n_prompt must be at least 1")
    text = CORPUS
    tokens = tokenize(text)
    while len(tokens) < n_prompt:
        text += CORPUS
        tokens = tokenize(text)
    return tokens[:n_prompt]
