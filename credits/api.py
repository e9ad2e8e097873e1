"""The credits endpoint: a user's balance and ledger."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credits import services
from credits.models import LedgerEntry


class LedgerEntryOutput(serializers.ModelSerializer):
    class Meta:
        model = LedgerEntry
        fields = ["id", "kind", "amount", "balance_after", "reference", "memo", "created_at"]


class CreditsOutput(serializers.Serializer):
    balance = serializers.IntegerField()
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    entries = LedgerEntryOutput(many=True)


class CreditsView(APIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses=CreditsOutput, summary="Balance and ledger, newest first")
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(services.list_entries(user=request.user), request, self)
        return Response(
            {
                "balance": services.get_balance(user=request.user),
                "count": paginator.page.paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "entries": LedgerEntryOutput(page, many=True).data,
            }
        )
