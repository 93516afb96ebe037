"""The shop window in Telegram (aiogram 3): catalog, cart, checkout, My orders, the admin chat,
and every notice about an order (what to say is decided by `notices`, from the lifecycle)."""
