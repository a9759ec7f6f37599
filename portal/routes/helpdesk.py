"""Helpdesk: read-only views across organizations, to help customers diagnose problems. Never an activity's
contents: the diagnostics name items by number."""

from flask import Blueprint, abort, current_app, request, url_for
from sqlalchemy import func, select

from portal import diagnostics
from portal.extensions import db
from portal.integration import describe_audit, recent_audit
from portal.models import Activity, GoogleIntegration, Organization, User, utcnow
from portal.routes import render, render_diagnostics, role_required

bp = Blueprint("helpdesk", __name__, url_prefix="/helpdesk")


@bp.route("/")
@role_required("helpdesk")
def index():
    """Every organization with its size, its integration's state in words and its users' health; a search
    for an organization or a user's e-mail narrows the list."""
    query = request.args.get("q", "")[:254].strip()
    users = select(func.count(User.id)).where(User.organization_id == Organization.id,
                                              User.role != "helpdesk").scalar_subquery()
    activities = (
        select(func.count(Activity.id))
        .where(Activity.organization_id == Organization.id, Activity.deleted_at.is_(None))
        .scalar_subquery()
    )
    statement = select(Organization, users.label("users"), activities.label("activities")).order_by(Organization.name)
    matching = diagnostics.organizations_matching(query)
    if matching is not None:
        statement = statement.where(Organization.id.in_(matching))
    rows = db.session.execute(statement).all()
    integrations = {row.organization_id: row for row in db.session.scalars(select(GoogleIntegration))}
    health = diagnostics.health_counts_by_organization(utcnow(), current_app.permanent_session_lifetime)
    return render("helpdesk/index.html", "helpdesk/_organizations.html", dict(
        rows=rows, integrations=integrations, health=health, query=query,
        found_users=diagnostics.users_matching(query), problem=diagnostics.integration_problem,
        labels=diagnostics.STATE_LABELS), target="organizations")


@bp.route("/organizations/<int:organization_id>")
@role_required("helpdesk")
def organization(organization_id: int):
    """One organization's diagnostics and settings, read-only."""
    org = db.session.get(Organization, organization_id)
    if org is None:
        abort(404)
    return render_diagnostics("helpdesk/organization.html", org,
                              url_for("helpdesk.organization", organization_id=org.id),
                              audit=recent_audit(org, limit=10), describe_audit=describe_audit)
