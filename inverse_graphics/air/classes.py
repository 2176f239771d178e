"""What AIR's identity latent ranges over: one class per (category, resting pose).

A category that can lie on the table in K ways (resting.py) gives K classes, so AIR's categorical
over classes is a categorical over categories times one over each category's resting poses
(their joint prior is p(category) p(pose | category), with pose probabilities from resting.py).
Each class has its own yaw symmetry order k (a box on its end turns differently from one on its
side). For a catalog whose categories all rest one way (the shipped objects) the classes are the
categories, in order, and nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..assets import ObjectCatalog
from ..scene import PlanarObjects


@dataclass(frozen=True)
class RestingClasses:
    """Per class (M of them): its category (catalog index), resting pose, yaw symmetry order k (0:
    continuous) and log prior probability (uniform categories, each pose's probability)."""

    category: tuple[int, ...]
    rest: tuple[int, ...]
    yaw_orders: tuple[int, ...]
    log_prior: tuple[float, ...]

    @classmethod
    def of(cls, catalog: ObjectCatalog) -> "RestingClasses":
        category, rest, orders, log_prior = [], [], [], []
        for c, entry in enumerate(catalog.categories):
            poses = entry.resting_poses
            for r in range(len(poses)):
                category.append(c)
                rest.append(r)
                orders.append(entry.yaw_symmetry_order(r))
                log_prior.append(-math.log(len(catalog)) + math.log(float(poses.probabilities[r])))
        return cls(tuple(category), tuple(rest), tuple(orders), tuple(log_prior))

    def __len__(self) -> int:
        return len(self.category)

    @property
    def are_categories(self) -> bool:
        """Whether every category has one resting pose (class i is category i)."""
        return self.category == tuple(range(len(self)))

    def to_objects(self, objects: PlanarObjects) -> PlanarObjects:
        """objects whose `category` holds classes (-1: none) -> the same objects with catalog
        categories and their resting poses."""
        if self.are_categories:
            return objects
        device = objects.category.device
        present = objects.category >= 0
        index = objects.category.clamp(min=0)
        category = torch.where(present, torch.tensor(self.category, device=device)[index], -1)
        rest = torch.where(present, torch.tensor(self.rest, device=device)[index], 0)
        return PlanarObjects(category, objects.position, objects.yaw, objects.color, objects.score, rest)

    def of_objects(self, objects: PlanarObjects) -> torch.Tensor:
        """(B, N) the class of each of objects (catalog categories and resting poses; -1 stays -1)."""
        if self.are_categories:
            return objects.category
        device = objects.category.device
        first = torch.zeros(max(self.category) + 1, dtype=torch.long, device=device)
        for i in reversed(range(len(self))):  # each category's first class
            first[self.category[i]] = i
        return torch.where(objects.category >= 0, first[objects.category.clamp(min=0)] + objects.rest_index, -1)
