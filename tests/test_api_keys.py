import hashlib
import re
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access.models import ApiKey
from access.services import api_key_create
from tests.factories import api_key_make

pytestmark = pytest.mark.django_db

RAW_KEY = re.compile(r"orc_[A-Za-z0-9_-]{43}")
ME = "/api/v1/me/"
CHANGELIST = "/admin/orchestra/apikey/"
NOT_AUTHENTICATED_KEY = {
    "error": {
        "code": "not_authenticated",
        "message": "Invalid, revoked or expired API key.",
        "details": {},
    }
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apikey_updates(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('UPDATE "orchestra_apikey"')
    ]


def bearer(raw_key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}


# --- creation ---------------------------------------------------------------------------


def test_the_service_stores_only_a_digest_and_a_prefix(alice):
    # when a key is created
    api_key, raw_key = api_key_create(user=alice, name="ci")

    # then the plaintext is a long random orc_ token that is stored nowhere
    assert RAW_KEY.fullmatch(raw_key)
    row = ApiKey.objects.values().get(pk=api_key.pk)
    assert row["digest"] == sha256(raw_key)
    assert row["prefix"] == raw_key[:10]
    assert row["name"] == "ci"
    assert row["user_id"] == alice.pk
    assert row["expires_at"] is None
    assert row["revoked_at"] is None
    assert row["last_used_at"] is None
    assert raw_key not in [str(value) for value in row.values()]


def test_the_service_refuses_an_expiry_in_the_past(alice):
    with pytest.raises(ValueError, match="must be in the future"):
        api_key_create(user=alice, name="ci", expires_at=timezone.now() - timedelta(seconds=1))

    assert not ApiKey.objects.exists()


def test_the_command_prints_a_key_that_authenticates(alice, api_client):
    # given alice exists
    stdout, stderr = StringIO(), StringIO()
    before = timezone.now()

    # when the command creates a key for her that expires in 3 days
    call_command(
        "create_api_key",
        "alice",
        "--name",
        "ci",
        "--expires-days",
        "3",
        stdout=stdout,
        stderr=stderr,
    )

    # then stdout is exactly the key, the database holds only its digest and prefix
    raw_key = stdout.getvalue().strip()
    assert RAW_KEY.fullmatch(raw_key)
    assert raw_key not in stderr.getvalue()
    api_key = ApiKey.objects.get()
    assert (api_key.user, api_key.name) == (alice, "ci")
    assert api_key.digest == sha256(raw_key)
    assert api_key.prefix == raw_key[:10]
    assert before + timedelta(days=3) <= api_key.expires_at <= timezone.now() + timedelta(days=3)
    # and the key authenticates
    response = api_client.get(ME, **bearer(raw_key))
    assert response.status_code == 200
    assert response.json() == {
        "username": "alice",
        "is_staff": False,
        "auth": "api_key",
        "api_key": "ci",
    }


def test_the_command_without_expiry_creates_a_key_that_never_expires(alice):
    stdout = StringIO()

    call_command("create_api_key", "alice", stdout=stdout, stderr=StringIO())

    api_key = ApiKey.objects.get()
    assert (api_key.name, api_key.expires_at) == ("cli", None)
    assert api_key.digest == sha256(stdout.getvalue().strip())


def test_the_command_refuses_an_unknown_user(alice):
    stdout = StringIO()

    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("create_api_key", "nobody", stdout=stdout, stderr=StringIO())

    assert stdout.getvalue() == ""
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("days", ["0", "-1"])
def test_the_command_refuses_an_expiry_under_one_day(alice, days):
    stdout = StringIO()

    with pytest.raises(CommandError, match=r"The expiry must be at least 1 day\."):
        call_command(
            "create_api_key", "alice", "--expires-days", days, stdout=stdout, stderr=StringIO()
        )

    assert stdout.getvalue() == ""
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_the_command_refuses_a_bad_name(alice, name):
    with pytest.raises(CommandError, match=r"--name must be 1 to 100 characters\."):
        call_command("create_api_key", "alice", "--name", name, stdout=StringIO())

    assert not ApiKey.objects.exists()


# --- authentication ---------------------------------------------------------------------


def test_a_bearer_key_authenticates_as_its_user(alice, api_client):
    _, raw_key = api_key_make(alice, name="laptop")

    response = api_client.get(ME, **bearer(raw_key))

    assert response.status_code == 200
    assert response.json() == {
        "username": "alice",
        "is_staff": False,
        "auth": "api_key",
        "api_key": "laptop",
    }


def test_the_bearer_keyword_is_case_insensitive(alice, api_client):
    _, raw_key = api_key_make(alice, name="laptop")

    response = api_client.get(ME, HTTP_AUTHORIZATION=f"bearer {raw_key}")

    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_a_session_user_is_reported_as_such(alice, api_client):
    api_client.force_login(alice)

    response = api_client.get(ME)

    assert response.json() == {
        "username": "alice",
        "is_staff": False,
        "auth": "session",
        "api_key": None,
    }


def test_a_key_of_bob_authenticates_bob_not_alice(alice, bob, api_client):
    api_key_make(alice, name="alice-key")
    _, bobs_key = api_key_make(bob, name="bob-key")

    response = api_client.get(ME, **bearer(bobs_key))

    assert response.json()["username"] == "bob"
    assert response.json()["api_key"] == "bob-key"


def test_an_unknown_key_is_rejected(alice, api_client):
    api_key_make(alice)

    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(ME, **bearer(ApiKey.generate()))

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED_KEY
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert apikey_updates(queries) == []
    assert ApiKey.objects.get().last_used_at is None


@pytest.mark.parametrize(
    "state",
    [
        {"revoked_at": timezone.now() - timedelta(hours=1)},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
    ],
    ids=["revoked", "expired"],
)
def test_a_revoked_or_expired_key_is_rejected_without_any_write(alice, api_client, state):
    # given a key that was last used two hours ago and is now revoked or expired
    used_at = timezone.now() - timedelta(hours=2)
    api_key, raw_key = api_key_make(alice, last_used_at=used_at, **state)

    # when it is used
    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(ME, **bearer(raw_key))

    # then it is refused and nothing is written
    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED_KEY
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert apikey_updates(queries) == []
    api_key.refresh_from_db()
    assert api_key.last_used_at == used_at


def test_the_key_of_an_inactive_user_is_rejected(alice, api_client):
    api_key, raw_key = api_key_make(alice)
    assert api_client.get(ME, **bearer(raw_key)).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=None)
    alice.is_active = False
    alice.save()

    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(ME, **bearer(raw_key))

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED_KEY
    assert apikey_updates(queries) == []
    api_key.refresh_from_db()
    assert api_key.last_used_at is None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer", "Invalid Authorization header."),
        ("Bearer a b", "Invalid Authorization header."),
        ("Bearer not-a-key", "Invalid, revoked or expired API key."),
    ],
    ids=["no-key", "two-parts", "garbage"],
)
def test_a_malformed_authorization_header_is_rejected(alice, api_client, header, message):
    api_key_make(alice)

    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(ME, HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "not_authenticated", "message": message, "details": {}}
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert apikey_updates(queries) == []


def test_no_credentials_at_all_is_rejected(api_client):
    response = api_client.get(ME)

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": "Authentication credentials were not provided.",
            "details": {},
        }
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_last_used_at_is_written_at_most_once_a_minute(alice, api_client):
    # given a key never used
    api_key, raw_key = api_key_make(alice)
    before = timezone.now()

    # when it is used twice in a row
    with CaptureQueriesContext(connection) as first:
        assert api_client.get(ME, **bearer(raw_key)).status_code == 200
    with CaptureQueriesContext(connection) as second:
        assert api_client.get(ME, **bearer(raw_key)).status_code == 200

    # then only the first use writes last_used_at
    assert len(apikey_updates(first)) == 1
    assert apikey_updates(second) == []
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert before <= first_use <= timezone.now()

    # when it is used again 59 s, then 61 s after the recorded use
    sooner, later = (CaptureQueriesContext(connection) for _ in range(2))
    with time_machine.travel(first_use + timedelta(seconds=59), tick=False), sooner:
        assert api_client.get(ME, **bearer(raw_key)).status_code == 200
    with time_machine.travel(first_use + timedelta(seconds=61), tick=False), later:
        assert api_client.get(ME, **bearer(raw_key)).status_code == 200

    # then only the use a minute later writes it again
    assert apikey_updates(sooner) == []
    assert len(apikey_updates(later)) == 1
    api_key.refresh_from_db()
    assert api_key.last_used_at == first_use + timedelta(seconds=61)


@time_machine.travel("2026-11-21 12:00:05Z", tick=False)  # inside one versions.MAX_AGE_S
def test_a_key_this_process_knows_is_checked_without_a_query(alice, api_client):
    _, raw_key = api_key_make(alice)
    assert api_client.get(ME, **bearer(raw_key)).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        assert api_client.get(ME, **bearer(raw_key)).status_code == 200

    assert [q["sql"] for q in queries if "orchestra_apikey" in q["sql"]] == []


def test_a_known_key_that_expires_is_rejected_from_then_on(alice, api_client):
    expires_at = timezone.now() + timedelta(minutes=5)
    _, raw_key = api_key_make(alice, expires_at=expires_at)
    assert api_client.get(ME, **bearer(raw_key)).status_code == 200

    with time_machine.travel(expires_at + timedelta(seconds=1), tick=False):
        response = api_client.get(ME, **bearer(raw_key))

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED_KEY


def test_revoking_a_key_stops_it_at_once(alice, api_client):
    api_key, raw_key = api_key_make(alice)
    assert api_client.get(ME, **bearer(raw_key)).status_code == 200

    api_key.revoke()

    assert api_client.get(ME, **bearer(raw_key)).status_code == 401


# --- admin ------------------------------------------------------------------------------


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_adding_a_key_in_the_admin_shows_it_once_and_stores_its_digest(
    client, superuser, alice, api_client
):
    # given a superuser in the admin
    client.force_login(superuser)

    # when they add a key for alice
    response = client.post(
        "/admin/orchestra/apikey/add/",
        {"user": alice.pk, "name": "deploy", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    # then the page they land on shows the key in a message, and only its digest is stored
    assert response.redirect_chain == [(CHANGELIST, 302)]
    [raw_key] = [
        match.group()
        for message in response.context["messages"]
        if (match := RAW_KEY.search(str(message)))
    ]
    assert raw_key in response.content.decode()
    api_key = ApiKey.objects.get()
    assert (api_key.user, api_key.name, api_key.expires_at) == (alice, "deploy", None)
    assert api_key.digest == sha256(raw_key)
    assert api_key.prefix == raw_key[:10]
    # and it is never shown again
    changelist = client.get(CHANGELIST)
    change_page = client.get(f"{CHANGELIST}{api_key.pk}/change/")
    assert raw_key not in changelist.content.decode()
    assert raw_key not in change_page.content.decode()
    assert api_key.prefix in change_page.content.decode()
    # and it works
    assert api_client.get(ME, **bearer(raw_key)).json()["username"] == "alice"


def test_the_admin_refuses_an_expiry_in_the_past(client, superuser, alice):
    client.force_login(superuser)
    yesterday = timezone.now() - timedelta(days=1)

    response = client.post(
        "/admin/orchestra/apikey/add/",
        {
            "user": alice.pk,
            "name": "deploy",
            "expires_at_0": yesterday.strftime("%Y-%m-%d"),
            "expires_at_1": yesterday.strftime("%H:%M:%S"),
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "expires_at": ["The expiry must be in the future."]
    }
    assert not ApiKey.objects.exists()


def test_a_staff_member_sees_only_their_own_keys(client, operator, alice):
    # given keys of an operator and of alice
    api_key_make(operator, name="olivia-key")
    api_key_make(alice, name="alice-key")

    # when the operator opens the changelist
    client.force_login(operator)
    response = client.get(CHANGELIST)

    # then only their own key is listed
    assert response.status_code == 200
    assert [key.name for key in response.context["cl"].result_list] == ["olivia-key"]
    assert "alice-key" not in response.content.decode()


def test_a_superuser_sees_every_key(client, superuser, operator, alice):
    api_key_make(operator, name="olivia-key")
    api_key_make(alice, name="alice-key")
    client.force_login(superuser)

    response = client.get(CHANGELIST)

    assert sorted(key.name for key in response.context["cl"].result_list) == [
        "alice-key",
        "olivia-key",
    ]


def test_a_staff_member_cannot_open_someone_elses_key(client, operator, alice):
    alices_key, _ = api_key_make(alice, name="alice-key")
    client.force_login(operator)

    response = client.get(f"{CHANGELIST}{alices_key.pk}/change/")

    # the admin answers "does not exist" by redirecting to its index
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_a_staff_member_cannot_create_a_key_for_someone_else(client, operator, alice):
    client.force_login(operator)

    response = client.post(
        "/admin/orchestra/apikey/add/",
        {"user": alice.pk, "name": "sneaky", "expires_at_0": "", "expires_at_1": ""},
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["user"]
    assert not ApiKey.objects.exists()


def test_a_staff_member_cannot_revoke_someone_elses_key(client, operator, alice):
    own_key, _ = api_key_make(operator, name="olivia-key")
    alices_key, _ = api_key_make(alice, name="alice-key")
    client.force_login(operator)

    response = client.post(
        CHANGELIST,
        {"action": "revoke_keys", "_selected_action": [own_key.pk, alices_key.pk]},
    )

    assert response.status_code == 302
    own_key.refresh_from_db()
    alices_key.refresh_from_db()
    assert own_key.revoked_at is not None
    assert alices_key.revoked_at is None


def test_a_viewer_may_not_see_api_keys(client, staff_user, alice):
    api_key_make(alice, name="alice-key")
    client.force_login(staff_user)

    response = client.get(CHANGELIST)

    assert response.status_code == 403


def test_the_revoke_action_revokes_the_selected_keys(client, superuser, alice, bob, api_client):
    # given three keys, one of them already revoked long ago
    first, first_raw = api_key_make(alice, name="first")
    second, _ = api_key_make(bob, name="second")
    revoked_at = timezone.now() - timedelta(days=3)
    old, _ = api_key_make(alice, name="old", revoked_at=revoked_at)
    untouched, untouched_raw = api_key_make(alice, name="untouched")
    assert api_client.get(ME, **bearer(first_raw)).status_code == 200  # known to this process
    client.force_login(superuser)

    # when the superuser revokes the first three
    response = client.post(
        CHANGELIST,
        {"action": "revoke_keys", "_selected_action": [first.pk, second.pk, old.pk]},
    )

    # then the two usable ones are revoked, the old revocation is kept, the rest untouched
    assert response.status_code == 302
    assert _messages(response) == ["Revoked 2 API key(s)."]
    for api_key in (first, second, old, untouched):
        api_key.refresh_from_db()
    assert first.revoked_at is not None
    assert second.revoked_at is not None
    assert old.revoked_at == revoked_at
    assert untouched.revoked_at is None
    assert api_client.get(ME, **bearer(first_raw)).status_code == 401
    assert api_client.get(ME, **bearer(untouched_raw)).status_code == 200
