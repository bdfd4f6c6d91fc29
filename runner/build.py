"""The one place where config nodes become objects."""

from typing import Any

from omegaconf import DictConfig


def build(node: DictConfig | None) -> Any:
    """Instantiate a `_target_` node. A `_partial_: true` node comes back as a callable that the
    call site completes with runtime values (parameters, widths, total steps). An empty or null
    node (norm=none, clip=none, init=default) means "nothing" and builds None."""
    if node is None or "_target_" not in node:
        return None
    from hydra.utils import instantiate

    return instantiate(node, _convert_="all")
