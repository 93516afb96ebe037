"""The Google Sheet (or CSV files) as the shop's CRM: every fact into its rows exactly once,
through any outage of Google or of the service."""
