"""PostgreSQL going away in the middle of moving money: all of it happens, or none."""

from __future__ import annotations

import psycopg2
import pytest
from django.core.management import call_command
from django.db import InterfaceError, OperationalError, connection

from credits import services as credit_services
from credits.models import Compensation, LedgerEntry
from tests.reliability.tally import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)


def terminate_this_connection() -> None:
    """Kill our own backend from another connection, as a failover or a network cut would."""
    pid = connection.connection.get_backend_pid()
    params = connection.settings_dict
    with (
        psycopg2.connect(
            dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=params["PORT"]
        ) as admin,
        admin.cursor() as cursor,
    ):
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_connection_dropped_inside_a_refund_refunds_once_after_a_retry(alice, monkeypatch):
    # Given a charge to refund (the ledger alone is under test: no avatar row)
    credit_services.grant_credits(user=alice, amount=1)
    credit_services.spend_credits(user=alice, amount=1, reference="order:x")
    create_entry = LedgerEntry.objects.create
    dropped: list[bool] = []

    def create_after_losing_the_connection(**fields):
        if fields.get("kind") == "refund" and not dropped:
            dropped.append(True)
            terminate_this_connection()
        return create_entry(**fields)

    monkeypatch.setattr(LedgerEntry.objects, "create", create_after_losing_the_connection)

    # When the connection dies half-way through the refund
    with pytest.raises((OperationalError, InterfaceError)):
        credit_services.compensate(reference="order:x", reason="timeout")
    connection.close()  # the next query reconnects, as the next task would

    # Then nothing of it happened: no refund, no balance change
    assert dropped == [True]
    assert not LedgerEntry.objects.filter(kind="refund").exists()
    assert credit_services.get_balance(user=alice) == 0
    assert Compensation.objects.get().status == "pending"

    # And the retry refunds exactly once
    compensation = credit_services.compensate(reference="order:x", reason="timeout")
    again = credit_services.compensate(reference="order:x", reason="timeout")
    assert (compensation.status, again.status) == ("refunded", "refunded")
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    assert credit_services.get_balance(user=alice) == 1
    call_command("check_ledger")
    assert_invariants()
