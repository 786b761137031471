"""The words every part of Maskwatch shares: servo modes, profiles, the threshold and the no-mask decision.

Each is written here once; configs, messages, command-line choices and the hub derive theirs from these.

Example::

    >>> decide(0.7, 0.5)
    Decision(label='no_mask', score=0.7)
    >>> decide(0.2, Profile.NEAR.default_point.threshold).score
    0.8
    >>> [mode.value for mode in ServoMode]
    ['sweep', 'track', 'hold', 'off']
    >>> check_threshold(1.5, "--threshold")
    Traceback (most recent call last):
    ...
    shared.errors.ConfigError: --threshold must be between 0 and 1, got 1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

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
_SERVO_ANGLE = TypeAdapter(ServoAngle)


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
    def default_point(self) -> OperatingPoint:
        """The operating point used where none of its settings is given (:data:`DEFAULT_OPERATING_POINTS`)."""
        return DEFAULT_OPERATING_POINTS[self]


class OperatingPoint(NamedTuple):
    """Where a detection becomes a decision: the no-mask ``threshold`` on ``p_no_mask``, the ``min_face_score``
    a detection needs to be a face at all (the classifier's 1 - p_not_face), and the
    ``min_no_mask_detector_score`` a no-mask verdict needs from the detector (:meth:`verified`).

    >>> point = OperatingPoint(threshold=0.3, min_face_score=0.5, min_no_mask_detector_score=0.7)
    >>> point.accepts(0.9, face_score=0.8, detector_score=0.95), point.accepts(0.9, 0.4, 0.95)
    (True, False)
    >>> point.accepts(None, None, 0.2)  # not classified this frame, no face scores: kept
    True
    >>> point.with_settings(threshold=None, min_face_score=0.6)
    OperatingPoint(threshold=0.3, min_face_score=0.6, min_no_mask_detector_score=0.7)
    """

    threshold: float
    min_face_score: float = 0.0
    min_no_mask_detector_score: float = 0.0

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> OperatingPoint:
        """The point of the same-named entries of ``settings`` (a report's row, say); other entries are ignored."""
        return cls(**{name: settings[name] for name in cls._fields})

    def verified(self, p_no_mask: float, detector_score: float) -> bool:
        """Whether a verdict stands: a no-mask one (``p_no_mask >= threshold``) needs a detector score of at
        least ``min_no_mask_detector_score``; a weaker one is dropped as unverified.

        An uncovered face is what a face detector finds best; a weak detection that the classifier calls no mask
        is most often no face (a hand, the back of a head) or a masked face seen badly (models/MODEL_CARD.md).

        >>> point = OperatingPoint(0.3, min_no_mask_detector_score=0.7)
        >>> point.verified(0.9, 0.95), point.verified(0.9, 0.5), point.verified(0.1, 0.5)
        (True, False, True)
        """
        return p_no_mask < self.threshold or detector_score >= self.min_no_mask_detector_score

    def accepts(self, p_no_mask: float | None, face_score: float | None, detector_score: float) -> bool:
        """Whether a detection becomes a decision: a face by the classifier (``face_score`` at least
        ``min_face_score``; ``None``: the classifier scores no faces) and :meth:`verified` (``p_no_mask``
        ``None``: not classified this time, nothing to verify)."""
        is_face = face_score is None or face_score >= self.min_face_score
        return is_face and (p_no_mask is None or self.verified(p_no_mask, detector_score))

    def with_settings(
        self,
        threshold: float | None = None,
        min_face_score: float | None = None,
        min_no_mask_detector_score: float | None = None,
    ) -> OperatingPoint:
        """This point with each setting that is given (not ``None``) in place of its own."""
        given = {
            "threshold": threshold,
            "min_face_score": min_face_score,
            "min_no_mask_detector_score": min_no_mask_detector_score,
        }
        return self._replace(**{name: value for name, value in given.items() if value is not None})


#: Default operating point per profile, chosen on 5-fold cross-validation by photo over the scene photos, by the
#: rule written in ``models.evaluation.chosen_point`` (models/MODEL_CARD.md, "Operating points"): face score 0.5
#: (only classifiers with a not-face class score faces); crowd takes the highest alert precision that keeps face
#: recall >= 0.90 and no-mask recall >= 0.85 (its promise: recall first); near the highest alert precision that
#: keeps face recall within 0.02 of the best its detector reaches.
DEFAULT_OPERATING_POINTS: dict[Profile, OperatingPoint] = {
    Profile.NEAR: OperatingPoint(threshold=0.7, min_face_score=0.5, min_no_mask_detector_score=0.6),
    Profile.CROWD: OperatingPoint(threshold=0.3, min_face_score=0.5, min_no_mask_detector_score=0.7),
}


def describe_profile_defaults(setting: str) -> str:
    """One setting of the default operating points for help texts, e.g. ``near 0.7, crowd 0.3`` for
    ``"threshold"``."""
    return ", ".join(f"{profile} {getattr(point, setting)}" for profile, point in DEFAULT_OPERATING_POINTS.items())


def _checked(adapter: TypeAdapter[float], bounds: tuple[float, float], value: float, what: str, unit: str) -> float:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        low, high = bounds
        raise ConfigError(f"{what} must be between {low:g} and {high:g}{unit}, got {value}") from None


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` if it is a valid :data:`Threshold`, else :class:`ConfigError` naming ``what`` and the range."""
    return _checked(_THRESHOLD, PROBABILITY_RANGE, value, what, "")


def check_servo_angle(value: float, what: str = "angle") -> float:
    """``value`` if it is a valid :data:`ServoAngle`, else :class:`ConfigError` naming ``what`` and the range.

    >>> check_servo_angle(200.0)
    Traceback (most recent call last):
    ...
    shared.errors.ConfigError: angle must be between -180 and 180 degrees, got 200.0
    """
    return _checked(_SERVO_ANGLE, SERVO_RANGE_DEG, value, what, " degrees")


class Decision(NamedTuple):
    """A face's label and the probability of that label."""

    label: Label
    score: float


def label_score(label: Label, p_no_mask: float) -> float:
    """The probability of ``label`` given the no-mask probability: ``p`` for ``no_mask``, ``1 - p`` for ``mask``."""
    return p_no_mask if label == "no_mask" else 1.0 - p_no_mask


def decide(p_no_mask: float, threshold: float) -> Decision:
    """The contract's decision: ``no_mask`` if ``p_no_mask >= threshold``, else ``mask``, with the label's score."""
    label: Label = "no_mask" if p_no_mask >= threshold else "mask"
    return Decision(label, label_score(label, p_no_mask))
