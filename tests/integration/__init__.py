"""integration: tests against the real servers scripts/test starts (marker ``integration``)."""
