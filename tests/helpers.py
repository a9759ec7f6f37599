"""Small builders shared by tests."""

from portal.activities import clean_activity, create_activity
from portal.changes import changed_by
from portal.extensions import db
from portal.models import User


def make_activity(app, owner_id, **values):
    """Create an activity through the same path the pages and API use; returns its id."""
    with app.app_context():
        owner = db.session.get(User, owner_id)
        payload = {
            "subject": "Planning",
            "start": "2026-03-02T09:00:00+01:00",
            "end": "2026-03-02T10:00:00+01:00",
            "time_zone": "Europe/Amsterdam",
            **values,
        }
        data = clean_activity(payload, organization=owner.organization, actor=owner)
        changed_by(db.session, owner.id)
        activity = create_activity(owner.organization, data)
        db.session.commit()
        return activity.id


class WorkerStopped(BaseException):
    """Raised at an engine checkpoint (the `stop_worker` fixture): the cycle stops there as a killed
    worker's would, past every `except Exception`."""
