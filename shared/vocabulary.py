"""The words every part of Maskwatch shares: servo modes, profiles, the threshold and the no-mask decision.

Each is written here once; configs, messages, command-line choices and the hub derive theirs from these.

Example::

    >>> decide(0.7, 0.5)
    Decision(label='no_mask', score=0.7)
    >>> decide(0.2, Profile.NEAR.default_threshold).score
    0.8
    >>> [mode.value for mode in ServoMode]
    ['sweep', 'track', 'hold', 'off']
    >>> check_threshold(1.5, "--threshold")
    Traceback (most recent call last):
    ...
    shared.errors.ConfigError: --threshold must be between 0 and 1, got 1.5
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, Strict, TypeAdapter, ValidationError

from shared.errors import ConfigError

#: A face's label: wearing a mask or not.
Label = Literal["mask", "no_mask"]
#: The range of a probability (and so of the threshold).
PROBABILITY_RANGE = (0.0, 1.0)
#: A probability, 0..1.
Probability = Annotated[float, Field(ge=PROBABILITY_RANGE[0], le=PROBABILITY_RANGE[1], allow_inf_nan=False)]
#: The no-mask decision threshold: a probability, 0..1.
Threshold = Probability
_THRESHOLD = TypeAdapter(Threshold)
#: The widest pan a servo may be given, degrees (a node's ``servo.min_deg``/``max_deg`` lie within it).
SERVO_RANGE_DEG = (-180.0, 180.0)
#: An angle within :data:`SERVO_RANGE_DEG`, degrees (a node clamps it to its own limits).
ServoAngle = Annotated[float, Field(ge=SERVO_RANGE_DEG[0], le=SERVO_RANGE_DEG[1], allow_inf_nan=False)]
#: A :data:`ServoAngle` as it travels in a message: a JSON number, never a boolean or a string.
StrictServoAngle = Annotated[ServoAngle, Strict()]


class ServoMode(StrEnum):
    """What the pan servo does: sweep the view, track the largest face, hold an angle, or switch off."""

    SWEEP = "sweep"
    TRACK = "track"
    HOLD = "hold"
    OFF = "off"


class Profile(StrEnum):
    """Operating point of a node: ``near`` (faces of 48 px and more, speed first) or ``crowd`` (small faces,
    recall first)."""

    NEAR = "near"
    CROWD = "crowd"

    @property
    def default_threshold(self) -> float:
        """The no-mask threshold used when none is set (:data:`DEFAULT_THRESHOLDS`)."""
        return DEFAULT_THRESHOLDS[self]

    @property
    def default_min_face_score(self) -> float:
        """The minimum face score used when none is set (:data:`DEFAULT_FACE_SCORES`)."""
        return DEFAULT_FACE_SCORES[self]

    @property
    def default_min_no_mask_detector_score(self) -> float:
        """The detector score a no-mask verdict needs when none is set (:data:`DEFAULT_NO_MASK_DETECTOR_SCORES`)."""
        return DEFAULT_NO_MASK_DETECTOR_SCORES[self]


#: Default no-mask threshold per profile, chosen with :data:`DEFAULT_FACE_SCORES` and
#: :data:`DEFAULT_NO_MASK_DETECTOR_SCORES` on 5-fold cross-validation by photo over the scene photos, by the rule
#: written in ``models.evaluation.chosen_point`` (models/MODEL_CARD.md, "Operating points"): face score 0.5;
#: crowd takes the highest alert precision that keeps face recall >= 0.90 and no-mask recall >= 0.85 (its
#: promise: recall first); near the highest alert precision that keeps face recall within 0.02 of the best its
#: detector reaches.
DEFAULT_THRESHOLDS: dict[Profile, float] = {Profile.NEAR: 0.7, Profile.CROWD: 0.25}
#: Default minimum face score (the classifier's 1 - p_not_face) per profile: detections under it are no face and
#: never become a decision. Only classifiers with a not-face class score faces.
DEFAULT_FACE_SCORES: dict[Profile, float] = {Profile.NEAR: 0.5, Profile.CROWD: 0.5}
#: Default detector score a no-mask verdict needs per profile (:func:`verified`).
DEFAULT_NO_MASK_DETECTOR_SCORES: dict[Profile, float] = {Profile.NEAR: 0.6, Profile.CROWD: 0.75}


def describe_profile_defaults(defaults: dict[Profile, float]) -> str:
    """Per-profile defaults for help texts, e.g. ``near 0.7, crowd 0.25``."""
    return ", ".join(f"{profile} {value}" for profile, value in defaults.items())


def describe_default_thresholds() -> str:
    """The default thresholds for help texts: ``near 0.7, crowd 0.25``."""
    return describe_profile_defaults(DEFAULT_THRESHOLDS)


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` if it is a valid :data:`Threshold`, else :class:`ConfigError` naming ``what`` and the range."""
    try:
        return _THRESHOLD.validate_python(value)
    except ValidationError:
        low, high = PROBABILITY_RANGE
        raise ConfigError(f"{what} must be between {low:g} and {high:g}, got {value}") from None


class Decision(NamedTuple):
    """A face's label and the probability of that label."""

    label: Label
    score: float


def label_score(label: Label, p_no_mask: float) -> float:
    """The probability of ``label`` given the no-mask probability: ``p`` for ``no_mask``, ``1 - p`` for ``mask``."""
    return p_no_mask if label == "no_mask" else 1.0 - p_no_mask


def verified(p_no_mask: float, detector_score: float, threshold: float, min_no_mask_detector_score: float) -> bool:
    """Whether a detection may become a decision: a no-mask verdict (``p_no_mask >= threshold``) needs a detector
    score of at least ``min_no_mask_detector_score``; a weaker one is dropped as unverified.

    An uncovered face is what a face detector finds best; a weak detection that the classifier calls no mask is
    most often no face (a hand, the back of a head) or a masked face seen badly (models/MODEL_CARD.md).

    >>> verified(0.9, 0.95, 0.3, 0.7), verified(0.9, 0.5, 0.3, 0.7), verified(0.1, 0.5, 0.3, 0.7)
    (True, False, True)
    """
    return p_no_mask < threshold or detector_score >= min_no_mask_detector_score


def accepted(
    p_no_mask: float | None,
    face_score: float | None,
    detector_score: float,
    threshold: float,
    min_face_score: float,
    min_no_mask_detector_score: float,
) -> bool:
    """Whether a detection becomes a decision at an operating point: a face by the classifier (``face_score`` at
    least ``min_face_score``; ``None``: the classifier scores no faces) and :func:`verified` (``p_no_mask``
    ``None``: not classified this time, nothing to verify).

    >>> accepted(0.9, 0.8, 0.95, 0.3, 0.5, 0.7), accepted(0.9, 0.4, 0.95, 0.3, 0.5, 0.7)
    (True, False)
    >>> accepted(None, None, 0.2, 0.3, 0.5, 0.7)  # not classified this frame, no face scores: kept
    True
    """
    is_face = face_score is None or face_score >= min_face_score
    return is_face and (p_no_mask is None or verified(p_no_mask, detector_score, threshold, min_no_mask_detector_score))


def decide(p_no_mask: float, threshold: float) -> Decision:
    """The contract's decision: ``no_mask`` if ``p_no_mask >= threshold``, else ``mask``, with the label's score."""
    label: Label = "no_mask" if p_no_mask >= threshold else "mask"
    return Decision(label, label_score(label, p_no_mask))
