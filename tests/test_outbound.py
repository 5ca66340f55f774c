"""Alert webhooks go to public addresses only: URLs that point at this machine,
a private network or a cloud metadata service are refused when a rule is saved
(API and page) and again, on the address actually connected to, when a
notification is sent; redirects are not followed; an installation opts in to
an internal receiver with OUTBOUND_ALLOWED_NETWORKS."""

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.models import AlertRule, Notification
from alerts.services import notification_send

from .test_alerts import Receiver, _rule

REFUSED = [
    ("http://169.254.169.254/latest/meta-data/iam/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://10.0.0.1/", "private"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://127.0.0.1:5432/", "loopback"),
    ("http://localhost:8765/admin/", "this machine"),
    ("http://[::1]:6379/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0/", "unspecified"),
    ("http://127.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),  # 169.254.169.254 through NAT64
    ("http://192.168.1.20/", "private"),
    ("http://100.64.0.1/", "not a public address"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.251/", "multicast"),
]
PUBLIC = "93.184.215.14"  # a public address the tests never connect to


def webhook_rule(tenant, url: str) -> dict:
    return {
        "name": "Errors",
        "kind": "error_rate",
        "threshold": 0.2,
        "notify": [{"type": "webhook", "url": url}],
    }


@pytest.fixture
def resolver(monkeypatch):
    """DNS for names under .test, answering what the test sets; other names as usual."""
    answers: dict[str, list[str]] = {}
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".test"):
            lookups.append(host)
            addresses = answers.get(host)
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, lookups


def _sent_to(tenant, rule_id: int) -> Notification:
    r = tenant.api("admin").post(f"/api/alerts/rules/{rule_id}/test")
    assert r.status_code == 202, r.content
    notification = Notification.objects.get(event__rule_id=rule_id)
    notification_send(notification_id=notification.pk)
    notification.refresh_from_db()
    return notification


@pytest.mark.parametrize("url,reason", REFUSED)
def test_webhooks_to_internal_addresses_are_refused_when_saved(tenant, url, reason):
    r = tenant.api("admin").post("/api/alerts/rules", webhook_rule(tenant, url))
    assert r.status_code == 400, r.content
    assert "notify" in r.json()["error"]["message"] and reason in r.json()["error"]["message"]
    assert not AlertRule.objects.exists()


def test_the_alerts_page_refuses_a_metadata_webhook(tenant, members):
    form = {
        "name": "Errors",
        "kind": "error_rate",
        "threshold": "0.2",
        "window_minutes": "15",
        "min_conversations": "10",
        "cooldown_minutes": "30",
        "webhook_url": "http://169.254.169.254/latest/meta-data/",
        "webhook_format": "json",
    }
    r = members["admin"].post("/alerts/", form)
    assert r.status_code == 400
    assert b"cloud metadata address" in r.content
    assert not AlertRule.objects.exists()


def test_metadata_addresses_stay_refused_inside_an_allowed_network(tenant, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["169.254.0.0/16", "10.0.0.0/8"]
    admin = tenant.api("admin")
    assert admin.post("/api/alerts/rules", webhook_rule(tenant, "http://169.254.169.254/")).status_code == 400
    assert admin.post("/api/alerts/rules", webhook_rule(tenant, "http://10.1.2.3/hook")).status_code == 201


def test_a_name_that_turns_to_loopback_after_saving_is_refused_when_sent(tenant, resolver):
    answers, _ = resolver
    receiver = Receiver()
    try:
        # Public when the rule is saved, this machine when the notification is sent.
        answers["hooks.rebind.test"] = [PUBLIC]
        url = f"http://hooks.rebind.test:{receiver.server.server_port}/hook"
        rule = _rule(tenant, notify=[{"type": "webhook", "url": url}])
        answers["hooks.rebind.test"] = ["127.0.0.1"]
        notification = _sent_to(tenant, rule.pk)
        assert notification.status == "failed" and "refused" in notification.last_error
        assert "127.0.0.1 is a loopback address" in notification.last_error
        assert receiver.requests == []
    finally:
        receiver.close()


def test_a_name_with_a_public_and_a_private_address_is_refused(tenant, resolver):
    answers, _ = resolver
    answers["mixed.test"] = [PUBLIC, "10.0.0.7"]
    r = tenant.api("admin").post("/api/alerts/rules", webhook_rule(tenant, "https://mixed.test/hook"))
    assert r.status_code == 400 and "10.0.0.7 is a private address" in r.json()["error"]["message"]


def test_the_connection_goes_to_the_address_checked_with_the_names_host_header(
    tenant, resolver, loopback_receivers
):
    answers, lookups = resolver
    receiver = Receiver()
    try:
        answers["hooks.pinned.test"] = ["127.0.0.1"]
        url = f"http://hooks.pinned.test:{receiver.server.server_port}/hook"
        rule = _rule(tenant, notify=[{"type": "webhook", "url": url}])
        lookups.clear()
        notification = _sent_to(tenant, rule.pk)
        assert notification.status == "sent", notification.last_error
        assert lookups == ["hooks.pinned.test"]  # resolved once: nothing looks it up again to connect
        [(headers, _)] = receiver.requests
        assert headers["Host"] == f"hooks.pinned.test:{receiver.server.server_port}"
    finally:
        receiver.close()


def test_a_loopback_receiver_is_reached_only_where_the_installation_allows_it(tenant, settings):
    receiver = Receiver()
    try:
        settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
        rule = _rule(tenant, notify=[{"type": "webhook", "url": receiver.url}])
        assert _sent_to(tenant, rule.pk).status == "sent" and len(receiver.requests) == 1
        # The installation withdraws it: rules saved before are refused when sent.
        settings.OUTBOUND_ALLOWED_NETWORKS = []
        Notification.objects.all().delete()
        notification = _sent_to(tenant, rule.pk)
        assert notification.status == "failed" and "loopback" in notification.last_error
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


class Redirecting:
    """A receiver that answers every POST with a redirect to ``to``, and records GETs and POSTs."""

    def __init__(self):
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append("POST " + self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(302)
                self.send_header("Location", outer.to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                outer.requests.append("GET " + self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.to = f"http://127.0.0.1:{self.server.server_port}/internal"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_redirect_from_the_receiver_is_not_followed(tenant, loopback_receivers):
    receiver = Redirecting()
    try:
        rule = _rule(tenant, notify=[{"type": "webhook", "url": receiver.url}])
        notification = _sent_to(tenant, rule.pk)
        assert notification.status == "failed" and "302" in notification.last_error
        assert receiver.requests == ["POST /hook"]
    finally:
        receiver.close()


def test_readers_see_that_a_delivery_failed_and_admins_see_why(tenant, members, loopback_receivers):
    failing = Receiver(fail_first=100)
    try:
        rule = _rule(tenant, notify=[{"type": "webhook", "url": failing.url}])
        assert _sent_to(tenant, rule.pk).last_error == "webhook answered 500"
        [event] = tenant.api("read").get("/api/alerts/events").json()["events"]
        assert event["notifications"][0]["status"] == "failed"
        assert event["notifications"][0]["last_error"] == "delivery failed"
        [event] = tenant.api("admin", "read").get("/api/alerts/events").json()["events"]
        assert event["notifications"][0]["last_error"] == "webhook answered 500"
        viewer_page = members["viewer"].get("/alerts/").content
        assert b"delivery failed" in viewer_page and b"answered 500" not in viewer_page
        assert b"webhook answered 500" in members["admin"].get("/alerts/").content
    finally:
        failing.close()


def _certificate(tmp_path, name: str) -> tuple[str, str]:
    """A self-signed certificate for ``name``: (certificate file, key file)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "receiver.pem", tmp_path / "receiver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


def test_an_https_receiver_is_reached_by_name_with_its_certificate_checked(
    tenant, resolver, loopback_receivers, monkeypatch, tmp_path
):
    answers, _ = resolver
    cert_file, key_file = _certificate(tmp_path, "hooks.tls.test")
    monkeypatch.setenv("SSL_CERT_FILE", cert_file)  # the receiver's certificate is the one trusted
    receiver = Receiver()
    server_names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    try:
        port = receiver.server.server_port
        answers["hooks.tls.test"] = answers["impostor.test"] = ["127.0.0.1"]
        rule = _rule(tenant, notify=[{"type": "webhook", "url": f"https://hooks.tls.test:{port}/hook"}])
        assert _sent_to(tenant, rule.pk).status == "sent"
        assert server_names == ["hooks.tls.test"] and len(receiver.requests) == 1
        # The same address under a name the certificate does not carry: no delivery.
        other = _rule(tenant, notify=[{"type": "webhook", "url": f"https://impostor.test:{port}/hook"}])
        notification = _sent_to(tenant, other.pk)
        assert notification.status == "failed" and "certificate" in notification.last_error
        assert len(receiver.requests) == 1
    finally:
        receiver.close()
