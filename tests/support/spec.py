"""What SPEC.md promises, as data the tests share."""

SPEC_RPCS = {  # SPEC §4: the Control service's methods
    "Resync",
    "GetStatus",
    "GetRules",
    "SetIntervalOverride",
    "ClearIntervalOverride",
    "Watch",
    "Explain",  # SPEC §3.2: masqctl explain
}
