from django.db import models
from django.utils import timezone


class ModelPrice(models.Model):
    """USD per million tokens for models whose name matches ``match_pattern``.

    Built-in prices have no organisation; an organisation's own row beats them.
    Among matching rows the latest ``effective_from`` not after the trace wins.
    """

    organisation = models.ForeignKey(
        "accounts.Organisation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="model_prices",
    )
    model_name = models.CharField(max_length=200)
    # A regular expression matched against the whole model name, case-insensitive.
    match_pattern = models.CharField(max_length=500)
    input_price_per_mtok = models.DecimalField(max_digits=14, decimal_places=6)
    output_price_per_mtok = models.DecimalField(max_digits=14, decimal_places=6)
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "billing_modelprice"  # the table predates the pricing app
        ordering = ["model_name", "-effective_from"]
        indexes = [models.Index(fields=["organisation"], name="modelprice_org")]

    def __str__(self) -> str:
        scope = self.organisation.slug if self.organisation_id else "built-in"
        return f"{self.model_name} ({scope}, from {self.effective_from:%Y-%m-%d})"
