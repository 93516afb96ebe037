"""The bot\x27s routers, one per flow."""
