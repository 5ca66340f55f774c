from django import forms

from agents.selectors import agent_choices

from .models import AlertRule, Kind

CHANNELS = [("", "Any channel"), ("chat", "Chat"), ("voice", "Voice"), ("widget", "Widget")]

# The fields that mean something for each kind; the page shows only those
# (static/js/alert_form.js) and the others are ignored when the form is saved.
KIND_FIELDS = {
    "agent": {Kind.ERROR_RATE, Kind.LATENCY, Kind.BUDGET},
    "channel": {Kind.ERROR_RATE, Kind.LATENCY},
    "statistic": {Kind.LATENCY},
    "baseline_factor": {Kind.ERROR_RATE},
    "baseline_period": {Kind.ERROR_RATE},
    "window_minutes": {Kind.ERROR_RATE, Kind.LATENCY},
    "min_conversations": {Kind.ERROR_RATE, Kind.LATENCY},
}
# The error rate is a rate 0..1 in rules and the API; people type it as a percentage.
PERCENT_KINDS = {Kind.ERROR_RATE}


class AlertRuleForm(forms.Form):
    """The Alerts page's form; the service validates the rule as a whole."""

    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=Kind.choices)
    agent = forms.ChoiceField(required=False)
    channel = forms.ChoiceField(choices=CHANNELS, required=False)
    threshold = forms.DecimalField(
        max_digits=18,
        decimal_places=6,
        min_value=0,
        help_text="error rate: % of conversations that failed; latency: ms; budget: % of the monthly "
        "budget spent; low balance: USD",
    )
    statistic = forms.ChoiceField(
        choices=[("p95", "p95"), ("avg", "average")], required=False, initial="p95", label="Latency statistic"
    )
    baseline_factor = forms.DecimalField(
        required=False, max_digits=8, decimal_places=3, min_value=0.001, label="Only above N× the baseline"
    )
    baseline_period = forms.ChoiceField(
        choices=[("day", "previous day"), ("week", "previous week")], required=False, initial="day"
    )
    window_minutes = forms.IntegerField(min_value=1, initial=15)
    min_conversations = forms.IntegerField(min_value=0, initial=10, label="Minimum conversations")
    cooldown_minutes = forms.IntegerField(min_value=0, initial=30)
    webhook_url = forms.URLField(required=False, assume_scheme="https")
    webhook_secret = forms.CharField(
        required=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False),
        help_text="Signs the payload with HMAC-SHA256; leave empty to keep the current one",
    )
    webhook_format = forms.ChoiceField(
        choices=[("json", "JSON"), ("slack", "Slack-compatible")], required=False, initial="json"
    )
    email_to = forms.EmailField(required=False, label="Email")

    def __init__(self, *args, organisation, rule: AlertRule | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = agent_choices(organisation=organisation, blank="All agents")
        for name, kinds in KIND_FIELDS.items():
            self.fields[name].kinds = " ".join(sorted(kinds))
        self.rule = rule

    def clean(self):
        data = super().clean()
        threshold = data.get("threshold")
        if data.get("kind") in PERCENT_KINDS and threshold is not None and threshold > 100:
            self.add_error("threshold", "an error-rate threshold is a percentage between 0 and 100")
        return data

    def kind_value(self, name: str):
        """A field's value when it applies to the chosen kind, else None."""
        kinds = KIND_FIELDS.get(name)
        return self.cleaned_data[name] if kinds is None or self.cleaned_data["kind"] in kinds else None

    @classmethod
    def initial_for(cls, rule: AlertRule) -> dict:
        webhook = next((t for t in rule.notify if t.get("type") == "webhook"), {})
        email = next((t for t in rule.notify if t.get("type") == "email"), {})
        return {
            "name": rule.name,
            "kind": rule.kind,
            "agent": rule.agent.public_id if rule.agent_id else "",
            "channel": rule.channel,
            "threshold": rule.threshold * 100 if rule.kind in PERCENT_KINDS else rule.threshold,
            "statistic": rule.statistic,
            "baseline_factor": rule.baseline_factor,
            "baseline_period": rule.baseline_period,
            "window_minutes": rule.window_minutes,
            "min_conversations": rule.min_conversations,
            "cooldown_minutes": rule.cooldown_minutes,
            "webhook_url": webhook.get("url", ""),
            "webhook_format": webhook.get("format", "json"),
            "email_to": email.get("to", ""),
        }

    def rule_data(self) -> dict:
        d = self.cleaned_data
        notify = []
        if d["webhook_url"]:
            target = {"type": "webhook", "url": d["webhook_url"], "format": d["webhook_format"] or "json"}
            secret = d["webhook_secret"]
            if not secret and self.rule is not None:
                current = next((t for t in self.rule.notify if t.get("type") == "webhook"), {})
                secret = current.get("secret") if current.get("url") == d["webhook_url"] else None
            if secret:
                target["secret"] = secret
            notify.append(target)
        if d["email_to"]:
            notify.append({"type": "email", "to": d["email_to"]})
        threshold = d["threshold"] / 100 if d["kind"] in PERCENT_KINDS else d["threshold"]
        return {
            "name": d["name"],
            "kind": d["kind"],
            "agent_id": self.kind_value("agent") or None,
            "channel": self.kind_value("channel") or None,
            "threshold": threshold,
            "statistic": self.kind_value("statistic") or "p95",
            "baseline_factor": self.kind_value("baseline_factor"),
            "baseline_period": self.kind_value("baseline_period") or "day",
            "window_minutes": d["window_minutes"],
            "min_conversations": d["min_conversations"],
            "cooldown_minutes": d["cooldown_minutes"],
            "notify": notify,
        }
