"""The YooKassa flow: a payment per reservation, verified notifications, a reconciler, captures
and refunds decided by the pure `core` from the inventory's answer alone."""
