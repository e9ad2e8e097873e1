"""Accounts, credits and selfie sessions for a benchmark, made before the clock starts.

Run by the orchestrator in a subprocess with the stage's environment (its database and
MEDIA_ROOT): `python -m bench.seed users --count N --credits K --out FILE`. Credits go through
`credits.services.grant_credits` so the ledger is what `check_ledger` expects. All sessions
share one stored copy of the fixture selfie: no benchmarked path writes to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "selfie-astronaut.jpg"


def seed_users(*, count: int, credits: int, prefix: str) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from rest_framework.authtoken.models import Token

    from avatars.models import SelfieSession, selfie_upload_to
    from avatars.selfies import prepare_selfie_from_settings
    from credits.services import grant_credits

    prepared = prepare_selfie_from_settings(FIXTURE.read_bytes())
    selfie_name = default_storage.save(
        selfie_upload_to(None, "x.jpg"), ContentFile(prepared.content)
    )
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [user_model(username=f"{prefix}{i}", password="!") for i in range(count)]
    )
    tokens = Token.objects.bulk_create(
        [Token(user=user, key=Token.generate_key()) for user in users]
    )
    sessions = SelfieSession.objects.bulk_create(
        [
            SelfieSession(
                owner=user,
                selfie=selfie_name,
                selfie_sha256=prepared.sha256,
                selfie_width=prepared.width,
                selfie_height=prepared.height,
            )
            for user in users
        ]
    )
    for user in users:
        grant_credits(user=user, amount=credits, memo="benchmark")
    return [
        {"id": user.pk, "token": token.key, "session": str(session.pk)}
        for user, token, session in zip(users, tokens, sessions, strict=True)
    ]


def seed_queued_avatars(*, users: list[dict], total: int, per_user: int) -> list[str]:
    """Charged, queued avatars without a pipeline message: the baseline's jobs."""
    from django.db import transaction

    from avatars import prompts
    from avatars.models import Avatar
    from credits.services import spend_credits

    ids: list[str] = []
    for i in range(total):
        user = users[i // per_user]
        with transaction.atomic():
            avatar = Avatar.objects.create(
                owner_id=user["id"],
                session_id=user["session"],
                style=prompts.DEFAULT_STYLE,
                prompt_version=prompts.PROMPT_VERSION,
            )
            spend_credits(
                user=avatar.owner, amount=1, reference=avatar.credit_reference, memo="baseline"
            )
        ids.append(str(avatar.pk))
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed")
    parser.add_argument("what", choices=["users", "baseline"])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--credits", type=int, default=3)
    parser.add_argument("--per-user", type=int, default=3)
    parser.add_argument("--avatars", type=int, default=0)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    users = seed_users(count=args.count, credits=args.credits, prefix=args.prefix)
    result: dict = {"users": users}
    if args.what == "baseline":
        result["avatars"] = seed_queued_avatars(
            users=users, total=args.avatars, per_user=args.per_user
        )
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
