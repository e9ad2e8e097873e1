"""Error texts of the failures the simulator can stage, as the real services word them."""

from __future__ import annotations

import hashlib


def moderation_blocked(prediction_id: str) -> str:
    """OpenAI's refusal as it surfaces in a failed gpt-image-1 prediction on Replicate."""
    request_id = "req_" + hashlib.sha256(prediction_id.encode()).hexdigest()[:32]
    return (
        "Your request was rejected by the safety system. If you believe this is an error, "
        f"contact us at help.openai.com and include the request ID {request_id}. "
        "safety_violations=[sexual]. (type: image_generation_user_error, "
        "code: moderation_blocked)"
    )


# Replicate's uncategorised failure; its docs advise retrying.
TRANSIENT_E1000 = (
    "Prediction failed for an unknown reason. It might have been a temporary problem, "
    "please try again. (E1000)"
)

# Seen verbatim on Replicate when its director fails to run a prediction.
DIRECTOR_E6716 = "Director: unexpected error handling prediction (E6716)"
