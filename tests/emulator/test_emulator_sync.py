"""Incremental sync: sync tokens, deletions in incremental lists, forbidden parameters, 410."""

import pytest
from googleapiclient.errors import HttpError


def full_sync(svc, **params):
    items, token = [], None
    while True:
        page = svc.events().list(calendarId="primary", pageToken=token, **params).execute()
        items += page["items"]
        token = page.get("nextPageToken")
        if not token:
            return items, page["nextSyncToken"]


def incremental(svc, sync_token, **params):
    items, token = [], None
    while True:
        page = svc.events().list(calendarId="primary", syncToken=sync_token, pageToken=token, **params).execute()
        items += page["items"]
        token = page.get("nextPageToken")
        if not token:
            return items, page["nextSyncToken"]


@pytest.fixture
def alice(workspace):
    email = workspace.user("alice")
    return email, workspace.service(email)


def test_incremental_lists_changes_and_deletions(alice, when):
    _, svc = alice
    a = svc.events().insert(calendarId="primary", body={"summary": "a", **when("2024-06-01T10:00")}).execute()
    b = svc.events().insert(calendarId="primary", body={"summary": "b", **when("2024-06-02T10:00")}).execute()
    items, token = full_sync(svc)
    assert {i["id"] for i in items} == {a["id"], b["id"]}

    assert incremental(svc, token)[0] == []

    c = svc.events().insert(calendarId="primary", body={"summary": "c", **when("2024-06-03T10:00")}).execute()
    svc.events().patch(calendarId="primary", eventId=a["id"], body={"summary": "a2"}).execute()
    svc.events().delete(calendarId="primary", eventId=b["id"]).execute()
    items, token2 = incremental(svc, token)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {a["id"], b["id"], c["id"]}
    assert by_id[a["id"]]["summary"] == "a2"
    # A deletion is cancelled; on the organizer's calendar it keeps its details, as in Google.
    assert by_id[b["id"]]["status"] == "cancelled" and by_id[b["id"]]["summary"] == "b"
    assert token2 != token
    assert incremental(svc, token2)[0] == []
    # The old token still works and sees the same changes.
    assert {i["id"] for i in incremental(svc, token)[0]} == set(by_id)


def test_incremental_paging_gives_sync_token_only_on_last_page(alice, when):
    _, svc = alice
    _, token = full_sync(svc)
    for i in range(5):
        svc.events().insert(calendarId="primary", body={"summary": f"e{i}", **when(f"2024-06-0{i + 1}T10:00")}).execute()
    page = svc.events().list(calendarId="primary", syncToken=token, maxResults=2).execute()
    assert len(page["items"]) == 2 and "nextSyncToken" not in page
    # A change made while paging is delivered by the next incremental sync.
    late = svc.events().insert(calendarId="primary", body={"summary": "late", **when("2024-06-09T10:00")}).execute()
    seen = [i["id"] for i in page["items"]]
    while "nextPageToken" in page:
        page = svc.events().list(calendarId="primary", syncToken=token, maxResults=2,
                                 pageToken=page["nextPageToken"]).execute()
        seen += [i["id"] for i in page["items"]]
    assert len(set(seen) - {late["id"]}) == 5
    after, _ = incremental(svc, page["nextSyncToken"])
    assert late["id"] in {i["id"] for i in after}


@pytest.mark.parametrize("param, value", [
    ("timeMin", "2024-01-01T00:00:00Z"), ("timeMax", "2024-01-01T00:00:00Z"),
    ("updatedMin", "2024-01-01T00:00:00Z"), ("orderBy", "updated"), ("q", "x"), ("iCalUID", "x@google.com"),
    ("privateExtendedProperty", "a=b"), ("sharedExtendedProperty", "a=b"),
])
def test_sync_token_rejects_filters(alice, param, value):
    _, svc = alice
    _, token = full_sync(svc)
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", syncToken=token, **{param: value}).execute()
    assert info.value.resp.status == 400
    assert info.value.error_details[0]["reason"] == "invalid"


def test_expired_sync_token_is_410_full_sync_required(alice, emulator, when):
    email, svc = alice
    _, token = full_sync(svc)
    fault = emulator.add_fault(kind="expire_sync_tokens", user=email)
    assert fault["applied_to"] == [email]
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", syncToken=token).execute()
    err = info.value
    assert err.resp.status == 410
    assert err.error_details == [{"domain": "calendar", "reason": "fullSyncRequired",
                                  "message": "Sync token is no longer valid, a full sync is required."}]
    # A new full sync yields a working token.
    _, fresh = full_sync(svc)
    assert incremental(svc, fresh)[0] == []


def test_garbage_sync_token_is_invalid(alice):
    _, svc = alice
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", syncToken="not-a-token").execute()
    assert info.value.resp.status in (400, 410)


def test_sync_token_of_another_calendar_needs_full_sync(workspace, alice):
    _, svc = alice
    bob = workspace.user("bob")
    _, bob_token = full_sync(workspace.service(bob))
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", syncToken=bob_token).execute()
    assert info.value.resp.status == 410


def test_person_edits_show_in_the_sync_clients_incremental_list(workspace, alice, when):
    email, svc = alice
    _, token = full_sync(svc)
    person = workspace.person(email)  # the user editing their own calendar in Google
    ev = person.events().insert(calendarId="primary", body={"summary": "by hand", **when("2024-06-05T10:00")}).execute()
    items, _ = incremental(svc, token)
    assert [i["id"] for i in items] == [ev["id"]]
    assert items[0]["creator"] == {"email": email, "self": True}
