"""Canaries: planted random secrets whose exposure measures memorisation.

Following Carlini et al. 2019 ("The Secret Sharer"), a canary is a sentence
with a random secret, e.g. ``"my account number is 4821-0937-5512"``, inserted
``repetitions`` times into one client's training data. After training, the
rank of the true secret among all candidates of the same shape (its
*exposure*) says how much the model memorised it. A :class:`CanaryFormat`
defines the sentence and the shape of the secret, can sample secrets and can
enumerate every candidate when the space is small enough for exact exposure.

The secrets are test data for the audit, not cryptographic secrets, so they are
drawn from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from fedpriv.errors import DataError

__all__ = [
    "AUDIT_CANARY_KINDS",
    "AUDIT_CANARY_WORDS",
    "BUILTIN_CANARY_FORMATS",
    "AuditCanaries",
    "Canary",
    "CanaryFormat",
    "corpus_words",
    "get_canary_format",
    "make_audit_canaries",
    "make_canaries",
    "rare_token_words",
]

_SECRET_SLOT: Final = "{secret}"

#: Pattern characters that stand for a random character, and their alphabets.
PATTERN_ALPHABETS: Final[dict[str, str]] = {
    "d": string.digits,
    "a": string.ascii_lowercase,
    "A": string.ascii_uppercase,
}


@dataclass(frozen=True)
class CanaryFormat:
    """The sentence of a canary and the shape of its secret.

    Attributes:
        name: Short identifier, e.g. ``"account"``.
        template: Sentence containing ``{secret}`` exactly once, e.g.
            ``"my account number is {secret}"``.
        pattern: Shape of the secret: ``d`` = a digit, ``a`` = a lower-case
            letter, ``A`` = an upper-case letter, any other character is
            literal; e.g. ``"dddd-dddd-dddd"``.
    """

    name: str
    template: str
    pattern: str

    def __post_init__(self) -> None:
        if not self.name:
            raise DataError("a CanaryFormat needs a non-empty name.")
        if self.template.count(_SECRET_SLOT) != 1:
            raise DataError(
                f"canary template {self.template!r} must contain {_SECRET_SLOT} exactly once."
            )
        if not any(char in PATTERN_ALPHABETS for char in self.pattern):
            raise DataError(
                f"canary pattern {self.pattern!r} has no random character; use 'd' (digit), "
                "'a' (lower-case letter) or 'A' (upper-case letter), e.g. 'dddd-dddd'."
            )

    @property
    def prefix(self) -> str:
        """The part of the sentence before the secret (what an extraction attack prompts with)."""
        return self.template.split(_SECRET_SLOT, 1)[0]

    @property
    def candidate_space_size(self) -> int:
        """Number of distinct secrets the pattern allows."""
        size = 1
        for char in self.pattern:
            alphabet = PATTERN_ALPHABETS.get(char)
            if alphabet is not None:
                size *= len(alphabet)
        return size

    def matches(self, secret: str) -> bool:
        """Return whether ``secret`` has the shape of :attr:`pattern`.

        Args:
            secret: Candidate secret.

        Returns:
            ``True`` if every character fits its pattern position.
        """
        if len(secret) != len(self.pattern):
            return False
        for char, spec in zip(secret, self.pattern, strict=True):
            alphabet = PATTERN_ALPHABETS.get(spec)
            if (alphabet is None and char != spec) or (
                alphabet is not None and char not in alphabet
            ):
                return False
        return True

    def sample_secret(self, rng: np.random.Generator) -> str:
        """Draw one secret uniformly from the candidate space.

        Args:
            rng: Source of randomness.

        Returns:
            A string matching :attr:`pattern`.
        """
        chars: list[str] = []
        for spec in self.pattern:
            alphabet = PATTERN_ALPHABETS.get(spec)
            chars.append(spec if alphabet is None else alphabet[int(rng.integers(len(alphabet)))])
        return "".join(chars)

    def render(self, secret: str) -> str:
        """Return the canary sentence with ``secret`` in place.

        Args:
            secret: A string matching :attr:`pattern`.

        Returns:
            The template with ``{secret}`` replaced.

        Raises:
            DataError: If ``secret`` does not match the pattern.
        """
        if not self.matches(secret):
            raise DataError(
                f"secret {secret!r} does not match the pattern {self.pattern!r} of canary "
                f"format {self.name!r}."
            )
        return self.template.replace(_SECRET_SLOT, secret)

    def enumerate_candidates(self, limit: int) -> Iterator[str]:
        """Yield every possible secret, in lexicographic order of the pattern positions.

        Args:
            limit: Largest candidate space the caller accepts.

        Yields:
            Each secret matching :attr:`pattern` exactly once.

        Raises:
            DataError: If :attr:`candidate_space_size` exceeds ``limit`` (raised on
                the call, before anything is yielded).
        """
        size = self.candidate_space_size
        if size > limit:
            raise DataError(
                f"canary format {self.name!r} has {size} candidate secrets, more than the limit "
                f"of {limit}; raise the limit or estimate exposure by sampling instead."
            )
        alphabets = [PATTERN_ALPHABETS.get(spec, spec) for spec in self.pattern]
        return ("".join(chars) for chars in itertools.product(*alphabets))


#: The canary formats fedpriv ships, by name.
BUILTIN_CANARY_FORMATS: Final[dict[str, CanaryFormat]] = {
    fmt.name: fmt
    for fmt in (
        CanaryFormat("account", "my account number is {secret}", "dddd-dddd-dddd"),
        CanaryFormat("phone", "you can reach me on {secret}", "(ddd) ddd-dddd"),
        CanaryFormat("ssn", "my social security number is {secret}", "ddd-dd-dddd"),
        CanaryFormat("pin", "my pin is {secret}", "dddd"),
        CanaryFormat("passcode", "the door passcode is {secret}", "aadd"),
    )
}


def get_canary_format(name: str) -> CanaryFormat:
    """Look up a built-in canary format.

    Args:
        name: One of the keys of :data:`BUILTIN_CANARY_FORMATS`.

    Returns:
        The format.

    Raises:
        DataError: If no built-in format has that name (the message lists them).
    """
    try:
        return BUILTIN_CANARY_FORMATS[name]
    except KeyError:
        raise DataError(
            f"unknown canary format {name!r}; choose one of {sorted(BUILTIN_CANARY_FORMATS)}."
        ) from None


@dataclass(frozen=True)
class Canary:
    """One planted secret.

    Attributes:
        canary_id: Unique identifier, ``"<format>-c<client>-<n>"``.
        client: Index of the client whose training data holds the canary.
        format: The format it was made from.
        secret: The random secret.
        text: The full sentence inserted into the training data.
        repetitions: How many times the sentence is inserted.
    """

    canary_id: str
    client: int
    format: CanaryFormat
    secret: str
    text: str
    repetitions: int


def make_canaries(
    fmt: CanaryFormat,
    clients: Sequence[int],
    per_client: int,
    repetitions: int,
    rng: np.random.Generator,
) -> list[Canary]:
    """Make ``per_client`` canaries with distinct secrets for each listed client.

    Args:
        fmt: The canary format.
        clients: Client indices (distinct, non-negative) to plant canaries in.
        per_client: Canaries per client (>= 1).
        repetitions: Insertions of each canary into its client's data (>= 1).
        rng: Source of randomness.

    Returns:
        The canaries, client by client; all secrets are different.

    Raises:
        DataError: If an argument is out of range, or the format has fewer
            candidate secrets than canaries requested.
    """
    for name, value in (("per_client", per_client), ("repetitions", repetitions)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}.")
    client_list = [int(client) for client in clients]
    if any(client < 0 for client in client_list):
        raise DataError(f"client indices must be non-negative, got {client_list}.")
    if len(set(client_list)) != len(client_list):
        raise DataError(f"client indices must be distinct, got {client_list}.")
    needed = len(client_list) * int(per_client)
    if needed > fmt.candidate_space_size:
        raise DataError(
            f"{needed} canaries need distinct secrets but format {fmt.name!r} has only "
            f"{fmt.candidate_space_size}; use a format with a larger space or fewer canaries."
        )
    secrets: set[str] = set()
    canaries: list[Canary] = []
    for client in client_list:
        for number in range(int(per_client)):
            secret = fmt.sample_secret(rng)
            while secret in secrets:  # terminates: needed <= space size
                secret = fmt.sample_secret(rng)
            secrets.add(secret)
            canaries.append(
                Canary(
                    canary_id=f"{fmt.name}-c{client:03d}-{number}",
                    client=client,
                    format=fmt,
                    secret=secret,
                    text=fmt.render(secret),
                    repetitions=int(repetitions),
                )
            )
    return canaries


# ------------------------------------------------- one-run audit canaries (empirical ε)

AUDIT_CANARY_WORDS: Final = 10
"""Random words per audit canary."""


AUDIT_CANARY_KINDS: Final = ("rare-tokens", "words")
"""``rare-tokens``: words that are single tokens of the model's tokenizer seen least (ideally
never) in the clients' data -- new to the model, so a trained canary stands out (the
new-token canaries of Panda et al., ICLR 2025); ``words``: random words of the corpus."""
RARE_TOKEN_POOL: Final = 256
"""Rare tokens the ``rare-tokens`` canaries draw from."""


def corpus_words(texts: Sequence[str], limit: int = 5000) -> list[str]:
    """Return up to ``limit`` distinct alphabetic words of ``texts`` (sorted) for canaries."""
    words = sorted({w for text in texts for w in text.split() if w.isalpha()})
    return words[:limit]


def rare_token_words(tokenizer: Any, texts: Sequence[str],
                     limit: int = RARE_TOKEN_POOL) -> list[str]:
    """Return up to ``limit`` words that are one token each, the rarest in ``texts`` first.

    A candidate is a vocabulary entry that starts a word (``Ġ``/``▁`` prefix, or
    a leading space once decoded) followed by letters only, and that the
    tokenizer reads back as that single token; candidates are ordered by how
    often they occur in the tokenized ``texts`` (never first), ties by token id,
    so the choice depends on the public tokenizer and the data only, never on
    the training run.
    """
    counts: dict[int, int] = {}
    for text in texts:
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            counts[token] = counts.get(token, 0) + 1
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    candidates = []
    for token in range(len(tokenizer)):
        if token in special:
            continue
        text = tokenizer.decode([token])
        word = text.strip()
        if not (text.startswith(" ") and len(word) >= 2 and word.isascii() and word.isalpha()):
            continue
        if tokenizer(" " + word, add_special_tokens=False)["input_ids"] != [token]:
            continue
        candidates.append((counts.get(token, 0), token, word))
    candidates.sort()
    return [word for _, _, word in candidates[:limit]]


@dataclass(frozen=True)
class AuditCanaries:
    """The audit's canaries: texts, which are included, and into which client's data."""

    texts: tuple[str, ...]
    included: np.ndarray
    clients: np.ndarray
    repetitions: int = 1
    """Copies of each included canary in its client's data: the audit's unit is then a group
    of that many records (group privacy; see :func:`fedpriv.dp.accounting.epsilon_group`)."""

    def planted(self, client: int) -> list[str]:
        """Return the included canaries that go into ``client``'s training data (each repeated)."""
        return [t for t, inc, c in zip(self.texts, self.included, self.clients, strict=True)
                if inc and c == client for _ in range(self.repetitions)]

    def planted_by_client(self) -> dict[int, list[str]]:
        """Return :meth:`planted` of every client that gets any, in one pass over the canaries."""
        by_client: dict[int, list[str]] = {}
        for text, included, client in zip(self.texts, self.included, self.clients, strict=True):
            if included:
                by_client.setdefault(int(client), []).extend([text] * self.repetitions)
        return by_client


def make_audit_canaries(
    count: int, num_clients: int, rng: np.random.Generator, words: Sequence[str],
    *, length: int = AUDIT_CANARY_WORDS, repetitions: int = 1,
) -> AuditCanaries:
    """Draw ``count`` random-word canaries, each included with probability ½ in a random client.

    An included canary appears ``repetitions`` times in that client's data.

    Raises:
        DataError: If ``count`` is below 2 or the word list is too small to
            make distinct canaries.
    """
    if count < 2:
        raise DataError(f"the one-run audit needs at least 2 canaries, got {count}; set "
                        "attacks.epsilon_canaries to 0 (off) or >= 2")
    if repetitions < 1:
        raise DataError(f"each audit canary needs at least 1 copy, got {repetitions}; set "
                        "attacks.epsilon_canary_repetitions >= 1")
    vocab = sorted(set(words))
    if len(vocab) < 20:
        raise DataError(f"the audit canaries are drawn from the corpus' words, which has only "
                        f"{len(vocab)} distinct ones; give more data or set "
                        "attacks.epsilon_canaries = 0")
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < count:
        text = " ".join(vocab[i] for i in rng.integers(len(vocab), size=length))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    included = rng.random(count) < 0.5
    clients = rng.integers(num_clients, size=count)
    return AuditCanaries(texts=tuple(texts), included=included, clients=clients,
                         repetitions=repetitions)
