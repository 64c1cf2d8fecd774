"""What the next export would carry. The rule is the core's
(:func:`ccx_agent.licensing.offline.renew_id_due`), shared by ``offline export`` and
``status`` so that what ``status`` announces is what the export writes; it is named here
too for the exchange's callers."""

from ccx_agent.licensing.offline import RENEW_ID_AHEAD, renew_id_due

__all__ = ["RENEW_ID_AHEAD", "renew_id_due"]
