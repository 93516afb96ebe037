"""In-process fakes of the outside services the shop talks to."""
