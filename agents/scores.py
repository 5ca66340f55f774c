"""Evaluation scores attached to stored traces."""

from decimal import Decimal

from django.db import transaction

from metrics.rollups import SCORE_FACTS, Counted, RollupDeltas

from .models import Score, Trace


@transaction.atomic
def score_add(*, trace: Trace, name: str, value: Decimal, comment: str = "") -> Score:
    """Attach an evaluation score to a stored trace; the trace's rollup bucket
    counts it, so ``avg_evaluation_score`` follows at once."""
    score = Score.objects.create(
        organisation_id=trace.organisation_id,
        trace=trace,
        agent_id=trace.agent_id,
        channel=trace.channel,
        deployment_version=trace.deployment_version,
        trace_created_at=trace.created_at,
        name=name,
        value=value,
        comment=comment,
    )
    deltas = RollupDeltas()
    # By its trace's time too: scores are partitioned by it (one partition read, not all).
    deltas.count(Counted(SCORE_FACTS, Score.objects.filter(pk=score.pk, trace_created_at=trace.created_at)))
    deltas.apply()
    return score
