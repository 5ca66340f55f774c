from django import forms

from .models import Role


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
