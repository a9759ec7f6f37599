"""The sync engine: one cycle for one user (pull, merge, push) and the push of an organization's outbox.

Data flows one way: Google changes (from the user's calendar, by sync token) and portal changes (from the
outbox) become the core's items; `plan_cycle` decides; Google writes go out in batches; then the portal
writes, the links' agreed states and the journal are committed. A write that failed leaves its link's
agreed state where it was and its outbox rows pending, so the next cycle tries again; nothing is dropped.

The phases, a module each: `run` (entry points, leases, the order of the phases), `state` (the cycle's
working memory and its journal), `read` (pull from Google, load the portal's items, claim links), `settle`
(writes whose outcome was never recorded), `write_google` and `write_portal`.

Errors are handled at their level: integration-level (bad key, delegation) pauses the organization and
sets its banner; user-level (not a Workspace user) sets that user's banner; item-level is journaled on the
item while the rest of the cycle goes on; transient ones are retried within the cycle, then next cycle.
"""

from portal.sync.engine.run import push_pending, run_user_cycle
from portal.sync.engine.state import CHECKPOINTS, Cycle, checkpoint, fresh_generation, worker_name

__all__ = ["CHECKPOINTS", "Cycle", "checkpoint", "fresh_generation", "push_pending", "run_user_cycle",
           "worker_name"]
