"""Certificates of a part on its own (a subnetwork, a Lipschitz part, a user's
:class:`~stablernn.models.part.Part`), checked in its own metric."""

from __future__ import annotations

from stablernn.certification._common import array
from stablernn.contraction import Certificate, JacobianFamily
from stablernn.models.part import Part, check_part


def certify_part(part: Part) -> Certificate:
    """A part checked in its own metric (the one the assembly's feedback is built with),
    against every Jacobian its activation allows."""
    check = check_part(part)
    condition, name = part.condition, type(part).__name__
    if not check.contracting:
        return Certificate.refuse(condition, f"{name}: its metric does not verify (rate bound "
                                  f"{check.rate:.4g}, {check.method})",
                                  {"check_method": check.method})
    return Certificate(True, condition, array(part.metric()), check.rate, None,
                       f"{name}: M J + J^T M <= -2 ({check.rate:.4g}) M for every slope "
                       f"({check.method})", {"rate_exact": check.exact})


def part_family(part: Part) -> JacobianFamily:
    """The Jacobians of a part on its own, slopes scaled to [0, 1]."""
    if not isinstance(part, Part):
        raise ValueError(f"part {type(part).__name__} has no Jacobian family stablernn knows; "
                         "expected a stablernn.models.part.Part (a subnetwork, a "
                         "LipschitzPart, or a module with that interface)")
    return part.jacobian_family()
