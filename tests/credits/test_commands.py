from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from credits import services
from credits.models import CreditAccount


def test_grant_credits_command_creates_the_account(alice, capsys):
    call_command("grant_credits", "alice", "7", "--memo", "launch gift")

    assert services.get_balance(user=alice) == 7
    assert services.list_entries(user=alice).get().memo == "launch gift"
    assert "balance 7" in capsys.readouterr().out


def test_grant_credits_command_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("grant_credits", "nobody", "1")


def test_grant_credits_command_refuses_a_non_positive_amount(alice):
    with pytest.raises(CommandError, match="positive"):
        call_command("grant_credits", "alice", "0")
    assert services.get_balance(user=alice) == 0


def test_check_ledger_passes_on_a_consistent_ledger(alice, bob, capsys):
    services.grant_credits(user=alice, amount=3)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")
    services.compensate(reference="avatar:1", reason="timeout")
    services.grant_credits(user=bob, amount=1)

    call_command("check_ledger")

    assert "ledger ok" in capsys.readouterr().out


def test_check_ledger_catches_a_balance_tampered_with_by_raw_sql(alice, capsys):
    services.grant_credits(user=alice, amount=3)
    account = CreditAccount.objects.get(user=alice)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE credits_creditaccount SET balance = 50 WHERE id = %s", [account.pk])

    with pytest.raises(CommandError, match="1 problem"):
        call_command("check_ledger")

    assert f"account {account.pk} (user {alice.pk}) has balance 50" in capsys.readouterr().err


def test_check_ledger_catches_a_double_refund_once_the_constraint_is_gone(alice, capsys):
    services.grant_credits(user=alice, amount=1)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")
    services.compensate(reference="avatar:1", reason="timeout")
    account = CreditAccount.objects.get(user=alice)
    with connection.cursor() as cursor:
        # A conditional unique constraint is a unique index in PostgreSQL.
        cursor.execute("DROP INDEX credits_entry_one_spend_or_refund_per_reference")
        cursor.execute(
            "INSERT INTO credits_ledgerentry "
            "(account_id, kind, amount, balance_after, reference, memo, created_at) "
            "VALUES (%s, 'refund', 1, 2, 'avatar:1', '', now())",
            [account.pk],
        )
        cursor.execute("UPDATE credits_creditaccount SET balance = 2 WHERE id = %s", [account.pk])

    with pytest.raises(CommandError):
        call_command("check_ledger")

    err = capsys.readouterr().err
    assert "reference avatar:1 has 2 refund entries" in err
    assert "gives back" not in err
