"""The YooKassa flow: not built yet, so `shop up` does not start it."""
