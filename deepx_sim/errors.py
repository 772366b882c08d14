"""One exception tree for the whole package.

Every error a user can trigger is a :class:`DeepxError`; each stage has its own
subclass so callers can catch one stage's failures.  Messages name the source
(file or object), the field, the bad value and what is allowed.
"""

from __future__ import annotations


class DeepxError(Exception):
    """Base class of every error deepx_sim raises on purpose."""


class ModelError(DeepxError):
    """A model (zoo name, ONNX file, layer graph) is unknown or malformed."""


class PlatformError(DeepxError):
    """A hardware file or platform name is unknown or malformed."""


class ProfileError(DeepxError):
    """A measured-profile file is malformed or names unknown layers/processors."""


class CostError(DeepxError):
    """A cost was requested for a combination the hardware cannot run."""


class PlanError(DeepxError):
    """The planner was given an impossible request or failed to solve."""


class InfeasibleError(PlanError):
    """No plan meets the constraints; the message names the binding one."""


class ScenarioError(DeepxError):
    """A scenario or sweep file is malformed."""


class SimulationError(DeepxError):
    """The simulator met an inconsistent state."""


def closest_names(name: str, known: list[str]) -> str:
    """Format the known names for an 'unknown X' message, best guesses first."""
    import difflib

    guesses = difflib.get_close_matches(name, known, n=3)
    listing = ", ".join(sorted(known))
    if guesses:
        return f"did you mean {', '.join(guesses)}? Known: {listing}"
    return f"known: {listing}"
