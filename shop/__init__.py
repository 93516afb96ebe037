"""The application: the `shop` command, the supervisor that runs the services, and the
embedded nats-server. The composition root; `libs/` is the library the services share."""
