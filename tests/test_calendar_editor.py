"""The activity editor as people use it: only the recurrence controls the chosen repeat needs, rules in words,
"This event" as the default for one occurrence, participants picked from the people who can be invited, one
Delete button, and a read view with answer buttons for participants."""

import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ActivityParticipant, User
from tests.conftest import EMAILS
from tests.helpers import make_activity

HX = {"HX-Request": "true"}
FORM = {
    "subject": "Sprint review", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
    "end_time": "10:00", "time_zone": "Europe/Amsterdam",
}
# Mondays 09:00-10:00 Amsterdam from 4 January 2027, six times.
SERIES = {"subject": "Team sync", "start": "2027-01-04T09:00:00+01:00", "end": "2027-01-04T10:00:00+01:00",
          "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"]}
THIRD = "20270118T080000Z"


def element(html: str, pattern: str) -> str:
    """The opening tag of the first element matching `pattern` (a regex on the tag's text)."""
    match = re.search(r"<[a-z]+\b[^>]*" + pattern + r"[^>]*>", html)
    assert match, pattern
    return match.group(0)


def is_hidden(html: str, element_id: str) -> bool:
    return re.search(r"\shidden(\s|>|=)", element(html, f'id="{element_id}"')) is not None


def offered_participants(html: str) -> list[str]:
    return re.findall(r'name="participants" value="([^"]+)"', html)


def field_errors(response) -> dict:
    html = response.get_data(as_text=True)
    return dict(re.findall(r'id="error-([a-z_]+)" role="alert">([^<]*)<', html))


# --- recurrence: only what the chosen repeat needs, in words --------------------------------------------------


def test_a_new_item_that_does_not_repeat_shows_no_recurrence_controls_and_no_rule_text(login_as):
    html = login_as("user").get("/calendar/activities/new").get_data(as_text=True)
    assert re.search(r'<option value=""\s+selected', html)  # "Does not repeat"
    for part in ("repeat-interval", "repeat-weekdays", "repeat-monthly", "repeat-ends"):
        assert is_hidden(html, part), part
    assert "RRULE" not in html


@pytest.mark.parametrize(("rule", "shown", "hidden"), [
    ("RRULE:FREQ=WEEKLY;BYDAY=MO,TH", {"repeat-interval", "repeat-weekdays", "repeat-ends"},
     {"repeat-monthly", "repeat-until", "repeat-count"}),
    ("RRULE:FREQ=MONTHLY;COUNT=4", {"repeat-interval", "repeat-monthly", "repeat-ends", "repeat-count"},
     {"repeat-weekdays", "repeat-until"}),
    ("RRULE:FREQ=DAILY;UNTIL=20260331T225959Z", {"repeat-interval", "repeat-ends", "repeat-until"},
     {"repeat-weekdays", "repeat-monthly", "repeat-count"}),
])
def test_the_editor_shows_only_the_controls_of_the_items_repeat(app, world, login_as, rule, shown, hidden):
    activity_id = make_activity(app, world["user"], recurrence=[rule])
    html = login_as("user").get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert {part for part in shown | hidden if not is_hidden(html, part)} == shown
    assert "RRULE" not in html


def test_a_rule_the_editor_cannot_show_is_said_in_words_and_kept_on_save(app, world, login_as):
    rule = "RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15"
    activity_id = make_activity(app, world["user"], recurrence=[rule])
    client = login_as("user")
    html = client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert "RRULE" not in html
    assert "Monthly, days 1, 15" in html and 'id="repeat-custom-note"' in html
    response = client.post(f"/calendar/activities/{activity_id}", data={**FORM, "subject": "Renamed",
                                                                        "freq": "CUSTOM"})
    assert response.status_code == 302
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        assert activity.subject == "Renamed" and activity.recurrence == [rule]


def test_fields_the_chosen_repeat_does_not_use_are_ignored(app, login_as):
    client = login_as("user")
    response = client.post("/calendar/activities", data={
        **FORM, "freq": "", "byday": ["TU"], "ends": "count", "count": "0", "until": "soon"})
    assert response.status_code == 302
    response = client.post("/calendar/activities", data={
        **FORM, "subject": "Daily", "freq": "DAILY", "byday": ["TU"], "monthly_mode": "weekday", "ends": "never",
        "count": "garbage", "until": "soon"})
    assert response.status_code == 302
    with app.app_context():
        rules = {a.subject: a.recurrence for a in db.session.scalars(select(Activity))}
    assert rules == {"Sprint review": [], "Daily": ["RRULE:FREQ=DAILY"]}


# --- one occurrence: "This event" first, radios beside their labels, one Delete -------------------------------


def test_opening_one_occurrence_applies_the_change_to_this_event_by_default(app, world, login_as):
    activity_id = make_activity(app, world["user"], **SERIES)
    html = login_as("user").get(f"/calendar/activities/{activity_id}?occurrence={THIRD}").get_data(as_text=True)
    checked = re.findall(r'<input type="radio" name="scope" value="([a-z]+)"[^>]*\schecked', html)
    assert checked and set(checked) == {"this"}, checked


def test_apply_to_is_a_fieldset_whose_labels_hold_their_radios(app, world, login_as):
    activity_id = make_activity(app, world["user"], **SERIES)
    html = login_as("user").get(f"/calendar/activities/{activity_id}?occurrence={THIRD}").get_data(as_text=True)
    scope = re.search(r'<fieldset[^>]*id="scope".*?</fieldset>', html, re.S)
    assert scope and "<legend>Apply to</legend>" in scope.group(0)
    labels = re.findall(r'<label[^>]*>\s*<input type="radio" name="scope" value="([a-z]+)"[^>]*>\s*([^<]+?)\s*</label>',
                        scope.group(0))
    assert [value for value, _ in labels] == ["this", "following", "all"]


def test_one_delete_button_with_the_series_choice_inside_its_form(app, world, login_as):
    activity_id = make_activity(app, world["user"], **SERIES)
    client = login_as("user")
    html = client.get(f"/calendar/activities/{activity_id}?occurrence={THIRD}").get_data(as_text=True)
    assert len(re.findall(r'<button[^>]*class="danger"', html)) == 1
    delete_form = re.search(r'<form[^>]*id="delete-form".*?</form>', html, re.S).group(0)
    assert re.search(r'name="scope" value="this"[^>]*checked', delete_form)
    assert 'name="scope" value="following"' in delete_form and 'name="scope" value="all"' in delete_form
    whole = client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert len(re.findall(r'<button[^>]*class="danger"', whole)) == 1 and 'name="scope"' not in whole


def test_the_delete_forms_choice_deletes_this_occurrence_only(app, world, login_as):
    activity_id = make_activity(app, world["user"], **SERIES)
    response = login_as("user").post(f"/calendar/activities/{activity_id}/delete",
                                     data={"occurrence": THIRD, "scope": "this"})
    assert response.status_code == 302
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        assert not activity.is_deleted
        assert [(e.original_start, e.cancelled) for e in activity.exceptions] == [(THIRD, True)]


# --- participants: the people who can be invited -----------------------------------------------------------


def test_participants_are_checkboxes_of_the_people_who_can_be_invited(app, world, login_as):
    with app.app_context():
        from portal.accounts import add_user
        from portal.models import Organization

        add_user(db.session.get(Organization, world["acme"]), "gone@acme.test", "Gina Gone", "user", "x" * 12)
        db.session.scalars(select(User).where(User.email == "gone@acme.test")).one().active = False
        db.session.commit()
    html = login_as("user").get("/calendar/activities/new").get_data(as_text=True)
    assert '<select name="participants"' not in html
    # Not the owner, not helpdesk staff, not inactive people, nobody of another organization.
    assert sorted(offered_participants(html)) == ["admin@acme.test", "colleague@acme.test"]
    assert 'id="participant-filter"' in html


@pytest.mark.parametrize(("who", "message"), [
    ("helpdesk@acme.test", "helpdesk staff"),
    ("user@acme.test", "owner"),
    ("user@globex.test", "Not a user of your organization"),
])
def test_the_server_refuses_participants_who_cannot_be_invited(app, login_as, who, message):
    client = login_as("user")
    for headers in ({}, HX):
        response = client.post("/calendar/activities", data={**FORM, "participants": [who]}, headers=headers)
        assert response.status_code == 422
        assert message in field_errors(response)["participants"]
    with app.app_context():
        assert db.session.scalars(select(Activity)).first() is None


def test_an_existing_helpdesk_participant_does_not_block_other_changes(app, world, login_as):
    activity_id = make_activity(app, world["user"], participants=[EMAILS["colleague"]])
    with app.app_context():  # placed there by the calendar sync from an invitation in Google, say
        db.session.add(ActivityParticipant(activity_id=activity_id, user_id=world["helpdesk"]))
        db.session.commit()
    response = login_as("user").post(f"/calendar/activities/{activity_id}", data={
        **FORM, "subject": "Kept", "participants": [EMAILS["colleague"], EMAILS["helpdesk"]]})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Activity, activity_id).subject == "Kept"


def offered_owners(html: str) -> list[str]:
    select_owner = re.search(r'<select name="owner">(.*?)</select>', html, re.S).group(1)
    return re.findall(r'<option value="([^"]+)"', select_owner)


def test_an_admin_gives_items_only_to_people_who_can_own_them(app, world, login_as):
    # Helpdesk staff cannot change activities, so an item given to them could be changed by nobody but admins.
    client = login_as("admin")
    assert sorted(offered_owners(client.get("/calendar/activities/new").get_data(as_text=True))) == [
        "admin@acme.test", "colleague@acme.test", "user@acme.test"]
    for headers in ({}, HX):
        response = client.post("/calendar/activities", data={**FORM, "owner": EMAILS["helpdesk"]}, headers=headers)
        assert response.status_code == 422
        assert "helpdesk staff" in field_errors(response)["owner"]
    with app.app_context():
        assert db.session.scalars(select(Activity)).first() is None


def test_an_item_already_owned_by_helpdesk_staff_can_still_be_saved_by_an_admin(app, world, login_as):
    activity_id = make_activity(app, world["helpdesk"], subject="Taken in from Google")
    client = login_as("admin")
    assert EMAILS["helpdesk"] in offered_owners(client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True))
    response = client.post(f"/calendar/activities/{activity_id}", data={**FORM, "subject": "Renamed",
                                                                       "owner": EMAILS["helpdesk"]})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Activity, activity_id).subject == "Renamed"


# --- participants see a read view and answer ----------------------------------------------------------------


@pytest.fixture
def meeting(app, world):
    return make_activity(app, world["user"], subject="Planning", location="Room 7", description="Agenda first",
                         participants=[EMAILS["colleague"]], recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO"])


def test_a_participant_sees_a_read_view_with_the_owner_and_answer_buttons(app, login_as, meeting):
    html = login_as("colleague").get(f"/calendar/activities/{meeting}").get_data(as_text=True)
    assert 'name="subject"' not in html and "<fieldset disabled" not in html
    view = re.search(r'<section[^>]*id="activity-view".*?</section>', html, re.S).group(0)
    assert "Uma User" in view and "Planning" in view and "Room 7" in view and "Agenda first" in view
    assert "Weekly on Mon" in view and "RRULE" not in html
    assert re.search(r"CET|CEST|\+0[12]00", view)  # times with their zone
    buttons = dict(re.findall(r'<button[^>]*value="(accepted|tentative|declined)"[^>]*aria-pressed="(true|false)"',
                              html))
    assert buttons == {"accepted": "false", "tentative": "false", "declined": "false"}
    assert 'id="item-sync-status"' in html


def test_a_participants_answer_is_marked_and_confirmed(app, login_as, meeting):
    client = login_as("colleague")
    response = client.post(f"/calendar/activities/{meeting}/response", headers=HX,
                           data={"response": "declined", "return_to": "/calendar/"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert re.search(r'class="message success"[^>]*>.*?declined', html, re.S)
    assert re.search(r'value="declined"[^>]*aria-pressed="true"', html)
    assert re.search(r'value="accepted"[^>]*aria-pressed="false"', html)
    again = client.get(f"/calendar/activities/{meeting}").get_data(as_text=True)
    assert re.search(r'value="declined"[^>]*aria-pressed="true"', again)
    with app.app_context():
        row = db.session.scalar(select(ActivityParticipant).where(ActivityParticipant.activity_id == meeting))
        assert (row.response_status, row.response_pending) == ("declined", True)


def test_the_saved_message_uses_the_success_look(app, login_as):
    response = login_as("user").post("/calendar/activities", headers=HX,
                                     data={**FORM, "return_to": "/calendar/?week=2026-03-02"})
    html = response.get_data(as_text=True)
    assert 'class="flash"' not in html
    saved = re.search(r'<div id="saved-message" tabindex="-1">(.*?)</div>', html, re.S)
    assert saved and 'class="message success"' in saved.group(1) and "Created “Sprint review”" in saved.group(1)


def test_an_answer_given_on_the_items_page_reaches_the_participants_google_copy(app, world, connected, sync_on,
                                                                                run_sync, google_user, login_as):
    from portal.sync.models import SyncLink
    from tests.test_answers_sync import attendee_answer
    from tests.test_attendees_sync import times

    sync_on("user", "colleague")
    activity_id = make_activity(app, world["user"], subject="Planning", participants=[EMAILS["colleague"]],
                                **times())
    run_sync("user")
    run_sync("colleague")
    with app.app_context():
        event_id = db.session.scalar(select(SyncLink.google_event_id).where(SyncLink.activity_id == activity_id))
    client = login_as("colleague")
    page = client.post(f"/calendar/activities/{activity_id}/response", headers=HX,
                       data={"response": "accepted"}).get_data(as_text=True)
    assert re.search(r'value="accepted"[^>]*aria-pressed="true"', page)
    assert run_sync("colleague").status == "ok"
    assert attendee_answer(google_user(EMAILS["colleague"]).get(event_id), EMAILS["colleague"]) == "accepted"
    assert attendee_answer(google_user(EMAILS["user"]).get(event_id), EMAILS["colleague"]) == "accepted"
    page = client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert re.search(r'value="accepted"[^>]*aria-pressed="true"', page)
    assert re.search(r'id="item-sync-status"[^>]*>.*?Google Calendar: <strong>Synced with Google Calendar</strong>', page, re.S)
