"""support: helpers shared by kitobs' tests, e.g. `tests.support.servers` for the real servers."""
