"""Address families between the domain (`masqd.core.model.Family`, labelled "ipv4"/"ipv6") and
the API's `Family` enum: the one home of this mapping.

No protobuf import here: the enum's numbers are the contract (protos/masqd/api/v1/control.proto),
and tests/unit/test_proto.py checks them against the generated code.
"""

from __future__ import annotations

from masqd.core.model import Family

UNSPECIFIED = 0
"""FAMILY_UNSPECIFIED: every enabled family, where a request allows it."""
VALUE = {Family.IPV4: 1, Family.IPV6: 2}
"""Family to its FAMILY_* value."""
OF_VALUE = {value: family for family, value in VALUE.items()}
LABELS = tuple(family.label for family in VALUE)
"""("ipv4", "ipv6"), as masqctl's --family and masq-cni's messages spell them."""


def value_of_label(label: str) -> int:
    """The FAMILY_* value of "ipv4" or "ipv6"; UNSPECIFIED for "" (every family)."""
    if not label:
        return UNSPECIFIED
    return VALUE[next(f for f in VALUE if f.label == label)]


def label_of_value(value: int, unspecified: str = "-") -> str:
    family = OF_VALUE.get(value)
    return family.label if family is not None else unspecified
