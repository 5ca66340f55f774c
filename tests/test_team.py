"""The team page: invitations by email, roles, removals, and who may do what."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import Invitation, Membership, Role
from audit.models import AuditLog

TEAM = "/settings/team/"


def _membership(username: str) -> Membership:
    return Membership.objects.get(user__username=username)


def _link(message) -> str:
    return re.search(r"http://\S+/invitation/\S+/", message.body).group(0)


def test_only_admins_and_owners_see_the_team(members):
    assert members["viewer"].get(TEAM).status_code == 403
    assert members["member"].get(TEAM).status_code == 403
    page = members["admin"].get(TEAM).content.decode()
    assert "owner-user" in page and "viewer-user" in page and "stranger" not in page
    assert members["owner"].get(TEAM).status_code == 200


def test_an_invitation_to_someone_new_emails_a_one_time_link_to_choose_a_password_and_join(
    members, mailoutbox, settings
):
    settings.SITE_URL = "http://analytics.example.com"
    r = members["admin"].post(TEAM, {"email": "New.Person@Example.com", "role": "member"})
    assert r.status_code == 302
    user = get_user_model().objects.get(username="new.person@example.com")
    assert not user.has_usable_password() and user.email == "new.person@example.com"
    assert not Membership.objects.filter(user=user).exists()  # not before they accept
    assert Invitation.objects.get().role == Role.MEMBER
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["new.person@example.com"] and "Acme" in message.subject
    link = _link(message)
    assert link.startswith("http://analytics.example.com/invitation/")
    entry = AuditLog.objects.get(action="member.invite")
    assert (entry.resource_id, entry.user_id) == ("new.person@example.com", "admin-user")
    assert entry.details == {"email": "new.person@example.com", "role": "member", "resent": False}

    # The link lets them choose a password, which accepts, and signs them in.
    invitee = Client()
    path = link.removeprefix("http://analytics.example.com")
    form = invitee.get(path, follow=True)
    assert b"Choose a password" in form.content
    r = invitee.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-long-passphrase", "new_password2": "a-long-passphrase"},
    )
    assert r.status_code == 302 and r["Location"] == "/"
    assert invitee.get("/agents/").status_code == 200
    assert _membership("new.person@example.com").role == Role.MEMBER
    assert not Invitation.objects.exists()
    joined = AuditLog.objects.get(action="member.invite_accept")
    assert (joined.resource_id, joined.user_id) == ("new.person@example.com", "new.person@example.com")
    assert Client().login(username="new.person@example.com", password="a-long-passphrase")
    # Used once, it no longer works.
    assert b"has been used or has expired" in Client().get(path, follow=True).content


def _stranger(email: str = "stranger@example.com"):
    """The owner of the other organisation, with an account and a password."""
    stranger = get_user_model().objects.get(username="stranger")
    stranger.email = email
    stranger.save()
    return stranger


def test_someone_with_an_account_joins_only_once_they_accept(members, outsider, mailoutbox):
    stranger = _stranger()
    r = members["owner"].post(TEAM, {"email": "Stranger@example.com", "role": "viewer"})
    assert r.status_code == 302
    assert Membership.objects.filter(user=stranger).count() == 1  # their own organisation only
    assert "/invitation/" not in mailoutbox[0].body and "/invitations/" in mailoutbox[0].body
    page = members["outsider"].get("/invitations/").content.decode()
    assert "Acme" in page and "owner-user" in page
    join = re.search(r'action="(/invitations/\d+/join/)"', page).group(1)
    r = members["outsider"].post(join)
    assert r.status_code == 302 and r["Location"] == "/"
    assert _membership_of(stranger, "acme").role == Role.VIEWER
    assert not Invitation.objects.exists()
    entry = AuditLog.objects.get(action="member.invite_accept")
    assert (entry.resource_id, entry.user_id, entry.details["role"]) == ("stranger", "stranger", "viewer")
    assert entry.organisation.slug == "acme"


def _membership_of(user, slug: str) -> Membership:
    return Membership.objects.get(user=user, organisation__slug=slug)


def test_an_invitee_may_decline(members, outsider, mailoutbox):
    stranger = _stranger()
    members["owner"].post(TEAM, {"email": "stranger@example.com", "role": "admin"})
    invitation = Invitation.objects.get()
    assert members["outsider"].post(f"/invitations/{invitation.pk}/decline/").status_code == 302
    assert not Invitation.objects.exists()
    assert not Membership.objects.filter(user=stranger, organisation__slug="acme").exists()
    entry = AuditLog.objects.get(action="member.invite_decline")
    assert (entry.resource_id, entry.user_id) == ("stranger@example.com", "stranger")


def test_nobody_else_can_accept_an_invitation(members, outsider, mailoutbox):
    members["admin"].post(TEAM, {"email": "someone@example.com", "role": "admin"})
    invitation = Invitation.objects.get()
    for role in ("viewer", "outsider"):
        assert members[role].post(f"/invitations/{invitation.pk}/join/").status_code == 404
        assert b"someone@example.com" not in members[role].get("/invitations/").content
    assert Client().post(f"/invitations/{invitation.pk}/join/").status_code == 302  # to the login
    assert Invitation.objects.filter(pk=invitation.pk).exists()
    assert not AuditLog.objects.filter(action="member.invite_accept").exists()


def _answer_to_inviter(client, email: str) -> dict:
    """Everything the inviter sees of an invitation, with the address taken out."""
    r = client.post(TEAM, {"email": email, "role": "viewer"}, follow=True)
    page = r.content.decode()
    row = re.search(rf"<tr>\s*<td>{re.escape(email)}</td>.*?</tr>", page, re.S).group(0)
    row = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", row)  # a fresh mask each time
    entry = AuditLog.objects.filter(action="member.invite").latest("pk")
    return {
        "status": r.status_code,
        "redirects": r.redirect_chain,
        "messages": [str(m).replace(email, "EMAIL") for m in r.context["messages"]],
        "row": re.sub(r"/\d+/", "/ID/", row.replace(email, "EMAIL")),
        "audit": (entry.resource_id.replace(email, "EMAIL"), {**entry.details, "email": "EMAIL"}),
    }


def test_the_inviter_sees_the_same_answer_whether_or_not_the_address_has_an_account(
    members, outsider, mailoutbox
):
    _stranger("has.account@example.com")
    with_account = _answer_to_inviter(members["admin"], "has.account@example.com")
    without_account = _answer_to_inviter(members["admin"], "no.account@example.com")
    assert with_account == without_account
    assert "new_account" not in str(with_account)


def test_inviting_a_pending_invitee_again_sends_the_email_again(members, mailoutbox):
    members["admin"].post(TEAM, {"email": "late@example.com", "role": "viewer"})
    members["admin"].post(TEAM, {"email": "late@example.com", "role": "viewer"})
    assert len(mailoutbox) == 2 and "/invitation/" in mailoutbox[1].body
    assert Invitation.objects.filter(email="late@example.com").count() == 1
    assert [e.details["resent"] for e in AuditLog.objects.filter(action="member.invite").order_by("pk")] == [
        False,
        True,
    ]


def test_an_admin_cancels_an_invitation(members, mailoutbox):
    members["admin"].post(TEAM, {"email": "late@example.com", "role": "viewer"})
    invitation = Invitation.objects.get()
    assert members["member"].post(f"{TEAM}invitations/{invitation.pk}/cancel/").status_code == 403
    r = members["admin"].post(f"{TEAM}invitations/{invitation.pk}/cancel/")
    assert r.status_code == 302
    assert not Invitation.objects.exists()
    entry = AuditLog.objects.get(action="member.invite_cancel")
    assert (entry.resource_id, entry.user_id) == ("late@example.com", "admin-user")


def test_inviting_an_existing_member_is_refused(members, mailoutbox):
    user = get_user_model().objects.get(username="viewer-user")
    user.email = "viewer@example.com"
    user.save()
    r = members["admin"].post(TEAM, {"email": "viewer@example.com", "role": "admin"})
    assert r.status_code == 400 and b"already a member" in r.content
    assert mailoutbox == [] and not AuditLog.objects.filter(action="member.invite").exists()


def test_an_invalid_invitation_shows_the_form_again(members):
    r = members["admin"].post(TEAM, {"email": "not-an-email", "role": "member"})
    assert r.status_code == 400
    r = members["admin"].post(TEAM, {"email": "x@example.com", "role": "emperor"})
    assert r.status_code == 400
    assert not get_user_model().objects.filter(username="x@example.com").exists()


def test_an_admin_cannot_make_or_manage_owners(members):
    r = members["admin"].post(TEAM, {"email": "boss@example.com", "role": "owner"})
    assert r.status_code == 400 and b"only an owner" in r.content
    owner = _membership("owner-user")
    members["admin"].post(f"{TEAM}{owner.pk}/role/", {"role": "viewer"})
    members["admin"].post(f"{TEAM}{owner.pk}/remove/")
    member = _membership("member-user")
    members["admin"].post(f"{TEAM}{member.pk}/role/", {"role": "owner"})
    assert _membership("owner-user").role == Role.OWNER
    assert _membership("member-user").role == Role.MEMBER
    assert not AuditLog.objects.filter(action__in=["member.role_change", "member.remove"]).exists()


def test_an_admin_changes_roles_below_owner(members):
    member = _membership("member-user")
    r = members["admin"].post(f"{TEAM}{member.pk}/role/", {"role": "admin"})
    assert r.status_code == 302
    assert _membership("member-user").role == Role.ADMIN
    entry = AuditLog.objects.get(action="member.role_change", resource_id="member-user")
    assert entry.details == {"changed_fields": ["role"], "old": {"role": "member"}, "new": {"role": "admin"}}
    assert entry.user_id == "admin-user"


def test_the_last_owner_can_be_neither_demoted_nor_removed(members):
    owner = _membership("owner-user")
    r = members["owner"].post(f"{TEAM}{owner.pk}/role/", {"role": "admin"}, follow=True)
    assert b"at least one owner" in r.content
    members["owner"].post(f"{TEAM}{owner.pk}/remove/")
    assert _membership("owner-user").role == Role.OWNER
    # With a second owner, the first may step down.
    admin = _membership("admin-user")
    members["owner"].post(f"{TEAM}{admin.pk}/role/", {"role": "owner"})
    members["owner"].post(f"{TEAM}{owner.pk}/role/", {"role": "viewer"})
    assert _membership("owner-user").role == Role.VIEWER
    remaining = _membership("admin-user")
    members["admin"].post(f"{TEAM}{remaining.pk}/remove/")
    assert _membership("admin-user").role == Role.OWNER


def test_an_admin_removes_a_member_whose_account_stays(members):
    viewer = _membership("viewer-user")
    r = members["admin"].post(f"{TEAM}{viewer.pk}/remove/")
    assert r.status_code == 302
    assert not Membership.objects.filter(pk=viewer.pk).exists()
    assert get_user_model().objects.filter(username="viewer-user").exists()
    assert members["viewer"].get("/agents/").status_code == 404
    entry = AuditLog.objects.get(action="member.remove")
    assert (entry.resource_id, entry.details["role"]) == ("viewer-user", "viewer")


def test_lower_roles_and_outsiders_cannot_touch_the_team(members, outsider):
    viewer = _membership("viewer-user")
    for role in ("viewer", "member"):
        assert members[role].post(TEAM, {"email": "x@example.com", "role": "viewer"}).status_code == 403
        assert members[role].post(f"{TEAM}{viewer.pk}/role/", {"role": "admin"}).status_code == 403
        assert members[role].post(f"{TEAM}{viewer.pk}/remove/").status_code == 403
    assert members["outsider"].post(f"{TEAM}{viewer.pk}/role/", {"role": "owner"}).status_code == 404
    assert members["outsider"].post(f"{TEAM}{viewer.pk}/remove/").status_code == 404
    assert _membership("viewer-user").role == Role.VIEWER
    assert not AuditLog.objects.filter(
        action__startswith="member.", user_id__in=["viewer-user", "member-user", "stranger"]
    ).exists()


@pytest.mark.parametrize(
    "role, allowed", [("viewer", False), ("member", True), ("admin", True), ("owner", True)]
)
def test_roles_are_enforced_across_pages(members, role, allowed):
    """Viewers read; members edit agents; admins manage keys, team and rollback."""
    client = members[role]
    created = client.post("/agents/", {"id": f"agent_{role}", "name": role})
    assert (created.status_code == 302) is allowed
    admin_pages = ("/settings/team/", "/settings/api-keys/")
    is_admin = role in ("admin", "owner")
    assert all((client.get(p).status_code == 200) is is_admin for p in admin_pages)
