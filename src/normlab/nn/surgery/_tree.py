"""Finding and replacing submodules by qualified name, shared by every surgery operation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn


@dataclass
class Match:
    """One module object found in a tree, with every qualified name it is reachable under.

    A module registered twice (``self.a = self.b = nn.BatchNorm2d(8)``) is one object with two names;
    surgery replaces it under all of them with the *same* new module, so the sharing survives.
    """

    module: nn.Module
    names: list[str]

    @property
    def name(self) -> str:
        return self.names[0]


def find_modules(model: nn.Module, predicate: Callable[[nn.Module], bool], where: str) -> list[Match]:
    """Modules of ``model`` (children, not the root) for which ``predicate`` holds, in registration order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    by_id: dict[int, Match] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if not predicate(module):
            continue
        if name == "":
            raise ValueError(
                f"{where}: the model itself is a {type(module).__name__}; surgery replaces submodules in "
                "place, so wrap it first, e.g. nn.Sequential(model)"
            )
        match = by_id.setdefault(id(module), Match(module, []))
        match.names.append(name)
    return list(by_id.values())


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where ``qualified_name`` points (works for Sequential/ModuleList indices too)."""
    parent_name, _, child_name = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, new)


def class_label(cls: type) -> str:
    """``nn.BatchNorm2d`` or ``normlab.nn.BatchNorm2d``: torch's and normlab's classes share names."""
    root = cls.__module__.split(".")[0]
    prefix = {"torch": "nn.", "normlab": "normlab.nn."}.get(root, f"{cls.__module__}.")
    return prefix + cls.__qualname__


def short_repr(module: nn.Module) -> str:
    """``nn.BatchNorm2d(64, eps=1e-05, ...)`` on one line, the way reports and errors name a module."""
    return f"{class_label(type(module))}({module.extra_repr()})"
