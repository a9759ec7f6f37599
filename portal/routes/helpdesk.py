"""Helpdesk: read-only views across organizations, to help customers diagnose problems."""

from flask import Blueprint, abort, render_template
from sqlalchemy import func, select

from portal.extensions import db
from portal.integration import recent_audit
from portal.models import Activity, GoogleIntegration, Organization, User
from portal.routes import role_required
from portal.sync.models import CalendarSync, SyncCycle, SyncJournalEntry
from portal.sync.policy import integration_of

bp = Blueprint("helpdesk", __name__, url_prefix="/helpdesk")


@bp.route("/")
@role_required("helpdesk")
def index():
    """List every organization with its size."""
    users = select(func.count(User.id)).where(User.organization_id == Organization.id).scalar_subquery()
    activities = (
        select(func.count(Activity.id))
        .where(Activity.organization_id == Organization.id, Activity.deleted_at.is_(None))
        .scalar_subquery()
    )
    user_problems = (
        select(func.count(CalendarSync.user_id))
        .where(CalendarSync.organization_id == Organization.id, CalendarSync.error_code.isnot(None))
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Organization, users.label("users"), activities.label("activities"),
               user_problems.label("user_problems")).order_by(Organization.name)
    ).all()
    integrations = {row.organization_id: row for row in db.session.scalars(select(GoogleIntegration))}
    return render_template("helpdesk/index.html", rows=rows, integrations=integrations)


@bp.route("/organizations/<int:organization_id>")
@role_required("helpdesk")
def organization(organization_id: int):
    """Show one organization's users and settings, read-only."""
    org = db.session.get(Organization, organization_id)
    if org is None:
        abort(404)
    syncs = {row.user_id: row for row in db.session.scalars(
        select(CalendarSync).where(CalendarSync.organization_id == org.id))}
    cycles = db.session.scalars(select(SyncCycle).where(SyncCycle.organization_id == org.id)
                                .order_by(SyncCycle.id.desc()).limit(20)).all()
    item_errors = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.organization_id == org.id,
                                                                    SyncJournalEntry.kind == "error")
                                     .order_by(SyncJournalEntry.id.desc()).limit(20)).all()
    return render_template("helpdesk/organization.html", organization=org, integration=integration_of(org),
                           syncs=syncs, cycles=cycles, item_errors=item_errors,
                           audit=recent_audit(org, limit=10))
