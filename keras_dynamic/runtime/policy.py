"""Exit policies: when a sample may leave the chain at an early exit.

Three rules, chosen per exit:

* ``max_softmax``: exit when the top softmax probability is ``>= threshold``.
  A threshold of 0 sends every sample out at that exit; one above 1 never fires.
* ``entropy``: exit when the softmax entropy (nats) is ``<= threshold``.
* ``patience`` (PABEE, Zhou et al., NeurIPS 2020): exit when the top class
  has not changed over the last ``threshold`` exits, i.e. this exit and the
  ``threshold`` exits before it all predict the same class. ``threshold`` is
  a whole number >= 1; every exit's prediction counts towards the streak,
  whatever its own rule, and an exit fewer than ``threshold`` exits deep
  never fires by patience.

A rule of ``None`` means "never exit early here". The terminal exit answers for
every sample that reaches it whatever its rule says (the chain enforces that).
All decisions are vectorised over the batch.

Exits give logits (softmax is applied first) or, where the manifest says so,
probabilities (used as they are: a softmax of probabilities would flatten them).
"""

# Policy files are a few hundred bytes per exit.
MAX_POLICY_BYTES = 1 << 20

import json
import math
import os
import pathlib
from typing import NamedTuple

import numpy as np

from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.files import atomic_write_text
from keras_dynamic.runtime.files import parse_json
from keras_dynamic.runtime.files import read_inside
from keras_dynamic.runtime.quantized import LOWEST
from keras_dynamic.runtime.quantized import code_table
from keras_dynamic.runtime.quantized import dequantize

KINDS = ("max_softmax", "entropy", "patience")
PATIENCE = "patience"
POLICY_FORMAT = "keras_dynamic.policy"
POLICY_VERSION = 1


class ExitRule(NamedTuple):
    """One exit's decision rule: ``kind`` in `KINDS` and a finite ``threshold``.

    For ``patience`` the threshold is the number of earlier exits that must
    agree with this one (a whole number >= 1).
    """

    kind: str
    threshold: float


def softmax(logits):
    """Row-wise softmax in float64 (stable: the row max is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def entropy(probabilities):
    """Row-wise entropy in nats; ``0 * log 0`` counts as 0."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=-1)


def confidence(probabilities, kind):
    """A score where larger means more confident, so every rule is ``score >= s``.

    ``max_softmax`` scores are the top probability; ``entropy`` scores are the
    negated entropy; `score_to_threshold` maps a score back to a threshold.
    """
    if kind == "max_softmax":
        return np.asarray(probabilities).max(axis=-1)
    return -entropy(probabilities)


def score_to_threshold(score, kind):
    """Inverse of the score mapping of `confidence` for a threshold value.

    Patience scores are streaks, and their thresholds the streak itself.
    """
    if kind == PATIENCE:
        return int(score)
    return float(score) if kind == "max_softmax" else float(-score)


def uses_patience(rules):
    """Whether any of ``rules`` (ExitRule or None) is a patience rule."""
    return any(rule is not None and rule.kind == PATIENCE for rule in rules)


def update_streak(streak, previous, labels):
    """Agreement streaks after one more exit: ``(streak, labels)``.

    ``streak[i]`` counts the exits before this one, in a row, whose top class
    equals this exit's ``labels[i]``; ``previous`` holds the last exit's top
    classes (-1 before the first exit, which starts every streak at 0).
    """
    return np.where(labels == previous, streak + 1, 0), labels


def fires(rule, logits, probabilities=False, streak=None):
    """Boolean mask of the rows (of exit values) whose sample leaves under ``rule``.

    ``logits`` holds probabilities instead where ``probabilities`` is true.
    A ``patience`` rule reads ``streak`` (see `update_streak`) instead.
    The top softmax probability is ``1 / sum(exp(z - max z))``, bit-identical
    to the maximum of `softmax`, so decisions replay calibration exactly
    without computing every probability.
    """
    if rule is None:
        return np.zeros(len(logits), dtype=bool)
    if rule.kind == PATIENCE:
        if streak is None:
            raise ValueError("A patience rule needs the agreement streak of each row.")
        return np.asarray(streak) >= rule.threshold
    if probabilities:
        p = np.asarray(logits, dtype=np.float64)
        if rule.kind == "entropy":
            return entropy(p) <= rule.threshold
        return p.max(axis=-1) >= rule.threshold
    if rule.kind == "entropy":
        return entropy(softmax(logits)) <= rule.threshold
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=-1) >= rule.threshold


# Batch-1 max-softmax decisions on rows of at most this many classes are
# taken in Python floats, where numpy's per-call overhead would dominate; a
# score within a relative _MARGIN of the threshold (far above the few ulps
# by which the two evaluations can differ) is settled by `fires` itself.
_SCALAR_MAX_CLASSES = 32
_MARGIN = 1e-9


def decider(rule, probabilities=False, quantization=None):
    """`fires` for one sample: ``leaves(values)`` -> bool on ``(1, C)`` exit values.

    ``quantization`` (the manifest's ``{"scale", "zero_point"}`` of a
    quantized exit) makes ``leaves`` take the exit's integer codes, deciding
    exactly as `fires` does on their `dequantize`d values.

    Returns None for a ``None`` rule (never exits). Decisions equal `fires`'s
    (hence calibration's) exactly; deciding small max-softmax rows of logits
    without numpy saves most of the microseconds a decision costs at batch 1.
    A patience rule depends on the earlier exits and has no decider of its
    own: sample loops compare a streak with its threshold.
    """
    if rule is None:
        return None
    if rule.kind == PATIENCE:
        raise ValueError("A patience rule is decided from the agreement streak.")

    def real(values):
        return values if quantization is None else dequantize(values, quantization)

    if probabilities or rule.kind != "max_softmax":
        return lambda values: bool(fires(rule, real(values), probabilities)[0])
    margin = abs(rule.threshold) * _MARGIN
    low, high = rule.threshold - margin, rule.threshold + margin
    table = None if quantization is None else code_table(quantization)

    def leaves(logits):
        if logits.size <= _SCALAR_MAX_CLASSES:
            if table is None:
                (row,) = logits.tolist()
            elif logits.dtype.itemsize == 1:  # int8 / uint8 codes
                row = [table[code - LOWEST] for code in logits.tolist()[0]]
            else:
                (row,) = real(logits).tolist()
            top = max(row)
            total = 0.0
            for value in row:
                total += math.exp(value - top)
            score = 1.0 / total
            # NaN fails both tests and goes to `fires`, like a near tie.
            if score >= high:
                return True
            if score < low:
                return False
        return bool(fires(rule, real(logits))[0])

    return leaves


def parse_rule(value, where):
    """Validates ``{"kind", "threshold"}`` (or ``None`` / an `ExitRule`).

    ``where`` names the exit (and file) in the error message.
    """
    if value is None:
        return None
    if isinstance(value, ExitRule):
        value = value._asdict()
    if not isinstance(value, dict) or set(value) != {"kind", "threshold"}:
        raise ManifestError(
            f"{where}: a policy must be null or an object with exactly the keys "
            f"'kind' and 'threshold'. Received: {describe(value)}"
        )
    kind, threshold = value["kind"], value["threshold"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise ManifestError(
            f"{where}: unknown policy kind {describe(kind)}; known kinds: {KINDS}."
        )
    number = math.nan
    if not isinstance(threshold, bool) and isinstance(
        threshold, (int, float, np.integer, np.floating)
    ):
        try:
            number = float(threshold)
        except OverflowError:  # an int beyond the float range
            pass
    if not math.isfinite(number):
        raise ManifestError(
            f"{where}: the threshold must be a finite number. "
            f"Received: {describe(threshold)}"
        )
    if kind == PATIENCE and (number < 1 or number != int(number)):
        raise ManifestError(
            f"{where}: a patience threshold is the number of earlier exits that "
            f"must agree, a whole number >= 1. Received: {describe(threshold)}"
        )
    return ExitRule(kind, int(number) if kind == PATIENCE else number)


class Policy:
    """Per-exit decision rules, keyed by exit name.

    Args:
        rules: dict ``exit_name -> {"kind": ..., "threshold": ...}`` (or an
            `ExitRule`, or ``None`` for "never exit early here"). Exits not
            named keep whatever rule they had where the policy is applied.

    Example:

    >>> p = Policy({"exit_1": {"kind": "max_softmax", "threshold": 0.9}})
    >>> p.rules["exit_1"]
    ExitRule(kind='max_softmax', threshold=0.9)
    >>> Policy.from_json(p.to_json()).rules == p.rules
    True
    """

    def __init__(self, rules):
        if not isinstance(rules, dict):
            raise ManifestError(
                f"A policy must be a dict exit_name -> rule. Received: {describe(rules)}"
            )
        self.rules = {
            # Built for every rule of every call that passes a policy: a
            # truncated repr costs nothing, `describe` would.
            str(name): parse_rule(rule, f"policy of exit {name!r:.100}")
            for name, rule in rules.items()
        }

    @classmethod
    def coerce(cls, policy):
        """Returns ``policy`` as a `Policy` (accepts a Policy, a dict or a file path)."""
        if isinstance(policy, Policy):
            return policy
        if isinstance(policy, dict):
            return cls(policy)
        if isinstance(policy, (str, os.PathLike)):
            return cls.load(policy)
        raise ManifestError(
            "A policy must be a Policy, a dict exit_name -> rule or a policy "
            f"file path. Received: {describe(policy)}"
        )

    def to_dict(self):
        return {
            name: None if rule is None else rule._asdict()
            for name, rule in self.rules.items()
        }

    def to_json(self):
        """The policy-file text (format in docs/MANIFEST.md)."""
        document = {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "exits": self.to_dict(),
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text, source="policy file"):
        """Parses policy-file text (str or UTF-8 bytes); errors name ``source``."""
        document = parse_json(text, source)
        if not isinstance(document, dict):
            raise ManifestError(f"{source}: the top level must be a JSON object.")
        if document.get("format") != POLICY_FORMAT:
            raise ManifestError(
                f"{source}: 'format' must be {POLICY_FORMAT!r}. "
                f"Received: {describe(document.get('format'))}"
            )
        if document.get("version") != POLICY_VERSION or isinstance(
            document.get("version"), bool
        ):
            raise ManifestError(
                f"{source}: unsupported policy version "
                f"{describe(document.get('version'))}; this runtime reads version "
                f"{POLICY_VERSION}."
            )
        exits = document.get("exits")
        if not isinstance(exits, dict):
            raise ManifestError(f"{source}: 'exits' must be an object.")
        try:
            return cls(exits)
        except ManifestError as e:
            raise ManifestError(f"{source}: {e}") from None

    def save(self, path):
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path):
        """Reads a policy file: a plain file (not a link, FIFO or device) of at most 1 MiB."""
        path = pathlib.Path(path)
        source = f"policy file {path}"
        data = read_inside(path.parent, path.name, source, limit=MAX_POLICY_BYTES)
        return cls.from_json(data, source=source)

    def __eq__(self, other):
        return isinstance(other, Policy) and self.rules == other.rules

    def __repr__(self):
        return f"Policy({self.to_dict()!r})"


__all__ = [
    "KINDS",
    "ExitRule",
    "Policy",
    "softmax",
    "entropy",
    "confidence",
    "fires",
    "decider",
    "uses_patience",
    "update_streak",
]
