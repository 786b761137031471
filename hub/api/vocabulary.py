"""Route of the contract's words (labels, servo modes and range, probability range, each profile's operating
point, the command names) for the dashboard and for scripts, so that none of them keeps a copy."""

from typing import Any, get_args

from fastapi import APIRouter

from hub.api.deps import Principal, errors
from shared.messages import COMMANDS, SCHEMA_VERSION
from shared.vocabulary import PROBABILITY_RANGE, SERVO_RANGE_DEG, Label, Profile, ServoMode

router = APIRouter(tags=["contract"], responses=errors())


@router.get("/api/vocabulary")
def vocabulary(_: Principal) -> dict[str, Any]:
    """The words of the MQTT contract as this hub's version has them: ``schema_version``, the face ``labels``, the
    ``servo_modes``, ``servo_range_deg`` (an angle outside is refused), ``probability_range`` (thresholds and
    scores), each profile's default operating point (``profiles``) and the ``commands`` a node answers."""
    return {
        "schema_version": SCHEMA_VERSION,
        "labels": list(get_args(Label)),
        "servo_modes": [mode.value for mode in ServoMode],
        "servo_range_deg": list(SERVO_RANGE_DEG),
        "probability_range": list(PROBABILITY_RANGE),
        "profiles": {profile.value: profile.default_point._asdict() for profile in Profile},
        "commands": sorted(COMMANDS),
    }
