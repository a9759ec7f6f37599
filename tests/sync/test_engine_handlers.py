"""Every action the core can plan has its portal-side handler (a new action without one fails here)."""

import typing

from portal.sync import core
from portal.sync.engine.write_portal import HANDLERS


def test_every_core_action_has_a_handler():
    actions = set(typing.get_args(core.Action))
    assert actions, "core.Action lists the planner's actions"
    assert actions == set(HANDLERS)


def test_every_dataclass_the_core_exports_as_an_action_is_in_the_union():
    # An action class added to the core but not to `core.Action` would slip past the test above.
    planned = {cls for name, cls in vars(core).items() if isinstance(cls, type) and cls.__module__ == core.__name__
               and hasattr(cls, "__dataclass_fields__") and name not in {
                   "ExceptionState", "ItemState", "Conflict", "Resolution", "FirstSyncPlan", "Link", "PortalItem",
                   "GoogleItem"}}
    assert planned == set(typing.get_args(core.Action))
