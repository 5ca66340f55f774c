"""Forms of the agent pages. They only parse what a person typed; the rules
live in the services, whose refusals the views show as form errors."""

import json

from django import forms

from audit.redaction import redact

from .config import MAX_INSTRUCTIONS_CHARS


class AgentForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}),
        required=False,
        max_length=MAX_INSTRUCTIONS_CHARS,
        strip=False,
    )
    model = forms.CharField(max_length=200, required=False, help_text="e.g. gpt-4o-mini")
    temperature = forms.FloatField(
        min_value=0, max_value=2, required=False, help_text="0 to 2; empty means the model's default"
    )

    def config(self) -> dict:
        data = self.cleaned_data
        return {
            "instructions": data["instructions"],
            "model": data["model"],
            "temperature": data["temperature"],
        }


class AgentCreateForm(AgentForm):
    id = forms.CharField(
        label="Id",
        max_length=64,
        required=False,
        help_text="optional, e.g. agent_support; generated when empty",
    )


class ToolSettingsField(forms.JSONField):
    """A tool's settings as a JSON object; shown with secrets masked."""

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(redact(value), indent=2, ensure_ascii=False, sort_keys=True)
        return super().prepare_value(value)

    def validate(self, value):
        super().validate(value)
        if not isinstance(value, dict):
            raise forms.ValidationError('settings must be a JSON object, e.g. {"api_key": "…"}')


class ToolForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="letters, digits, _ . -; starts with a letter")
    config = ToolSettingsField(
        label="Settings (JSON)",
        initial=dict,
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text="Secrets are shown masked as [redacted:…]; leave a mask as it is to keep the stored value.",
    )

    public_settings = forms.CharField(
        label="Settings every reader sees",
        required=False,
        max_length=2000,
        help_text="comma-separated names, e.g. endpoint, max_results; viewers and API keys without "
        "the admin scope see every other setting masked",
    )

    def clean_config(self):
        return self.cleaned_data["config"] or {}

    def clean_public_settings(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["public_settings"].split(",") if name.strip()]


class ToolSettingsForm(ToolForm):
    """Editing one tool: its name is in the URL."""

    name = None


class DeploymentForm(forms.Form):
    version = forms.CharField(max_length=64, required=False, help_text="e.g. v4; the next number when empty")
    changes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=10_000)


class PhoneNumberAssignForm(forms.Form):
    number = forms.CharField(max_length=32, help_text="international format, e.g. +1 415 555 0100")
    agent = forms.ChoiceField()

    def __init__(self, *args, agent_choices: list[tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = agent_choices or []  # from selectors.agent_choices
