"""REST API v1: JSON over bearer tokens. Errors are JSON too: 400 names the fields, never a 500 for bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import wraps

from flask import Blueprint, abort, g, jsonify, request
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from portal.activities import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    ValidationError,
    activity_to_values,
    answer_activity,
    clean_activity,
    create_activity,
    delete_activity,
    refusal,
    text_problem,
    update_activity,
    visible_activities_query,
)
from portal.changes import changed_by
from portal.extensions import csrf, db
from portal.models import (
    ACTIVITY_TEXTS,
    PROJECT_NAME_LIMIT,
    PROJECTS_PER_ORGANIZATION_LIMIT,
    TASK_NAME_LIMIT,
    TASKS_PER_PROJECT_LIMIT,
    Activity,
    ActivityType,
    Project,
    ProjectTask,
)
from portal.signin_models import ApiToken
from portal.sync.models import CalendarSync
from portal.sync.policy import sync_allowed
from portal.sync.status import StatusReader

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # bearer tokens are not sent by browsers on their own, so CSRF does not apply

MAX_PAGE = 500


class ApiError(Exception):
    def __init__(self, status: int, message: str, fields: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields


@bp.errorhandler(ApiError)
def handle_api_error(exc: ApiError):
    body = {"error": exc.message}
    if exc.fields:
        body["fields"] = exc.fields
    return jsonify(body), exc.status


@bp.errorhandler(HTTPException)
def handle_http_error(exc: HTTPException):
    response = jsonify({"error": exc.description or exc.name})
    response.status_code = exc.code or 500
    if exc.code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="portal"'
    return response


def token_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            abort(401, description="Send an API token: Authorization: Bearer <token>.")
        user, refusal = ApiToken.authenticate(token.strip())
        if user is None:
            abort(401, description=refusal)
        g.api_user = user
        if db.session.dirty:  # last_used_at, at most once a minute
            db.session.commit()
        return view(*args, **kwargs)

    return wrapped


def writer_required():
    if not g.api_user.can_edit_activities:
        raise ApiError(403, "Your role may not change activities.")


def json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than any parser should follow
        body = None
    if body is None:
        raise ApiError(400, "Expected a JSON body (Content-Type: application/json).", {"body": "Not valid JSON."})
    if not isinstance(body, dict):
        raise ApiError(400, "Expected a JSON object.", {"body": "Expected a JSON object."})
    return body


def activity_json(activity: Activity, status_reader=None) -> dict:
    status = (status_reader or StatusReader(activity.organization))(activity)
    body = {
        "id": activity.id,
        **activity_to_values(activity),
        # Each participant's answer (in the portal or in Google); changed by POST .../response only.
        "responses": {link.user.email: link.response_status for link in activity.participant_links},
        "exceptions": [exception_json(activity, e) for e in activity.exceptions],
        "updated_at": activity.updated_at.isoformat(),
        "google_event_id": status.google_event_id,
        "sync_status": status.status,
    }
    if status.error:
        body["sync_error"] = status.error
    if activity.is_deleted:
        body["deleted"] = True
    return body


def exception_json(activity: Activity, exception) -> dict:
    """One changed or cancelled occurrence, keyed by its original start (as Google's instance ids are)."""
    body = {"original_start": exception.original_start, "cancelled": exception.cancelled}
    for name in ACTIVITY_TEXTS:
        if getattr(exception, name) is not None:
            body[name] = getattr(exception, name)
    for name in ("start", "end"):
        moment = getattr(exception, f"{name}_at") or getattr(exception, f"{name}_date")
        if isinstance(moment, datetime):
            body[name] = moment.astimezone(activity.zone).isoformat()
        elif moment is not None:
            body[name] = moment.isoformat()
    return body


def activity_response(activity: Activity, status: int = 200):
    response = jsonify(activity_json(activity))
    response.status_code = status
    response.headers["ETag"] = f'"{activity.version}"'
    return response


def get_activity(activity_id: int, *, for_edit: bool = False, for_delete: bool = False) -> Activity:
    activity = db.session.get(Activity, activity_id)
    if activity is None or activity.is_deleted or not activity.visible_to(g.api_user):
        raise ApiError(404, f"No activity {activity_id}.")
    if for_edit or for_delete:
        writer_required()
        refused = refusal(g.api_user, activity, deleting=for_delete, how_to_answer=(
            f'answer it instead: POST /api/v1/activities/{activity_id}/response {{"response": "declined"}} '
            "(or accepted, tentative)"))
        if refused:
            raise ApiError(403, refused)
    return activity


def check_if_match(activity: Activity) -> None:
    """Refuse to overwrite a version the client has not seen (412), so no edit is lost silently."""
    expected = request.headers.get("If-Match")
    if expected and expected.strip() not in ("*", f'"{activity.version}"', str(activity.version)):
        raise ApiError(412, "The activity changed since you read it; read it again and reapply your change.")


def parse_since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
        if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
            raise ValueError(value)
    except (ValueError, OverflowError):
        raise ApiError(400, "Bad filter.", {"updated_since": "Must be RFC 3339, e.g. 2026-01-31T12:00:00Z."}) from None
    return moment


@bp.get("/activities")
@token_required
def list_activities():
    """List the activities the token's user may see; with updated_since, deletions are included."""
    user = g.api_user
    owner = None
    if request.args.get("owner"):
        owner = user.organization.user_by_email(request.args["owner"])
        if owner is None:
            raise ApiError(400, "Bad filter.", {"owner": "Not a user of your organization."})
    since = parse_since(request.args["updated_since"]) if request.args.get("updated_since") else None
    # A client polling for changes must see deletions too, so tombstones come along with updated_since.
    query = visible_activities_query(user, owner=owner, updated_since=since, include_deleted=since is not None)
    activities = db.session.scalars(query.order_by(Activity.updated_at, Activity.id).limit(MAX_PAGE + 1)).all()
    reader = StatusReader(user.organization, activities[:MAX_PAGE])
    return jsonify({
        "activities": [activity_json(a, reader) for a in activities[:MAX_PAGE]],
        "truncated": len(activities) > MAX_PAGE,
    })


@bp.post("/activities")
@token_required
def create_activity_view():
    """Create an activity."""
    writer_required()
    user = g.api_user
    try:
        data = clean_activity(json_body(), organization=user.organization, actor=user)
    except ValidationError as exc:
        raise ApiError(400, "The activity is not valid.", exc.fields) from None
    changed_by(db.session, user.id)
    activity = create_activity(user.organization, data)
    db.session.commit()
    return activity_response(activity, 201)


@bp.get("/activities/<int:activity_id>")
@token_required
def get_activity_view(activity_id: int):
    """Read one activity."""
    return activity_response(get_activity(activity_id))


@bp.patch("/activities/<int:activity_id>")
@token_required
def update_activity_view(activity_id: int):
    """Change some fields of an activity."""
    activity = get_activity(activity_id, for_edit=True)
    check_if_match(activity)
    user = g.api_user
    try:
        data = clean_activity(json_body(), organization=user.organization, actor=user, existing=activity)
    except ValidationError as exc:
        raise ApiError(400, "The activity is not valid.", exc.fields) from None
    changed_by(db.session, user.id)
    update_activity(activity, data)
    db.session.commit()
    return activity_response(activity)


@bp.delete("/activities/<int:activity_id>")
@token_required
def delete_activity_view(activity_id: int):
    """Delete an activity."""
    activity = get_activity(activity_id, for_delete=True)
    check_if_match(activity)
    changed_by(db.session, g.api_user.id)
    delete_activity(activity)
    db.session.commit()
    return "", 204


@bp.post("/activities/<int:activity_id>/response")
@token_required
def answer_activity_view(activity_id: int):
    """A participant's answer (accepted, tentative, declined); it reaches their Google copy with their sync."""
    activity = get_activity(activity_id)
    body = json_body()
    unknown = sorted(set(body) - {"response"})
    if unknown:
        raise ApiError(400, "The answer is not valid.", {name[:60]: "Unknown field." for name in unknown[:20]})
    changed_by(db.session, g.api_user.id)
    try:
        answer_activity(activity, g.api_user, body.get("response"))
    except PermissionError as exc:
        raise ApiError(403, str(exc)) from None
    except ValidationError as exc:
        raise ApiError(400, "The answer is not valid.", exc.fields) from None
    db.session.commit()
    return activity_response(activity)


@bp.get("/activity-types")
@token_required
def list_activity_types():
    """List the organization's activity types."""
    types = db.session.scalars(
        select(ActivityType).where(ActivityType.organization_id == g.api_user.organization_id).order_by(ActivityType.name)
    )
    return jsonify({"activity_types": [
        {"id": t.id, "name": t.name, "colour": t.colour, "is_default": t.is_default,
         "is_personal": t.is_personal, "sync_to_google": t.sync_to_google}
        for t in types
    ]})


def project_json(project: Project) -> dict:
    return {"id": project.id, "name": project.name, "tasks": [{"id": t.id, "name": t.name} for t in project.tasks]}


@bp.get("/projects")
@token_required
def list_projects():
    """List the organization's projects with their tasks."""
    projects = db.session.scalars(
        select(Project).where(Project.organization_id == g.api_user.organization_id).order_by(Project.name)
    )
    return jsonify({"projects": [project_json(p) for p in projects]})


@bp.post("/projects")
@token_required
def create_project():
    """Create a project with its tasks (admins)."""
    user = g.api_user
    if not user.is_admin:
        raise ApiError(403, "Only admins create projects.")
    body = json_body()
    errors = {}
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "This field is required."
    elif len(name.strip()) > PROJECT_NAME_LIMIT:
        errors["name"] = f"At most {PROJECT_NAME_LIMIT} characters."
    elif problem := text_problem(name):
        errors["name"] = problem
    elif db.session.scalar(select(Project).where(Project.organization_id == user.organization_id,
                                                 Project.name == name.strip())):
        errors["name"] = "A project with this name exists."
    elif db.session.scalar(select(func.count(Project.id)).where(
            Project.organization_id == user.organization_id)) >= PROJECTS_PER_ORGANIZATION_LIMIT:
        errors["name"] = f"An organization may have at most {PROJECTS_PER_ORGANIZATION_LIMIT} projects."
    tasks = body.get("tasks", [])
    task_names = []
    if not isinstance(tasks, list):
        errors["tasks"] = "Must be a list of {\"name\": ...} objects."
    elif len(tasks) > TASKS_PER_PROJECT_LIMIT:
        errors["tasks"] = f"At most {TASKS_PER_PROJECT_LIMIT} tasks in one project."
    else:
        for index, task in enumerate(tasks):
            task_name = task.get("name") if isinstance(task, dict) else None
            if not isinstance(task_name, str) or not task_name.strip() or len(task_name.strip()) > TASK_NAME_LIMIT:
                errors[f"tasks[{index}].name"] = f"Each task needs a name of 1 to {TASK_NAME_LIMIT} characters."
            elif problem := text_problem(task_name):
                errors[f"tasks[{index}].name"] = problem
            else:
                task_names.append(task_name.strip())
    if errors:
        raise ApiError(400, "The project is not valid.", errors)
    project = Project(organization_id=user.organization_id, name=name.strip(),
                      tasks=[ProjectTask(name=n) for n in task_names])
    db.session.add(project)
    db.session.commit()
    return jsonify(project_json(project)), 201


def calendar_sync_json(user) -> dict:
    row = db.session.get(CalendarSync, user.id)
    body = {"enabled": bool(row and row.enabled), "status": row.status if row else "off",
            "last_synced_at": row.last_success_at.isoformat() if row and row.last_success_at else None}
    if row is not None and row.error_code:
        body["error"] = {"code": row.error_code, "cause": row.error_cause, "fix": row.error_fix,
                         "at": row.error_at.isoformat()}
    return body


@bp.get("/me/calendar-sync")
@token_required
def get_calendar_sync():
    """Read the user's own calendar sync switch and status."""
    return jsonify(calendar_sync_json(g.api_user))


@bp.put("/me/calendar-sync")
@token_required
def put_calendar_sync():
    """Switch the user's own calendar sync on or off."""
    body = json_body()
    enabled = body.get("enabled")
    if not isinstance(enabled, bool) or set(body) - {"enabled"}:
        raise ApiError(400, "Send {\"enabled\": true} or {\"enabled\": false}.",
                       {"enabled": "Must be true or false."})
    if enabled and not sync_allowed(g.api_user.organization):
        raise ApiError(409, "Your organization's Google Calendar integration is not switched on; ask your admin.")
    CalendarSync.for_user(g.api_user).switch(enabled)
    db.session.commit()
    return jsonify(calendar_sync_json(g.api_user))
