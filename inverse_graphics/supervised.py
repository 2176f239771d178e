"""The supervised regression baseline: a CNN that regresses count, identities and poses from labels.

It has AIR's image encoder (the same `Encoder`, same width) and a fully connected
head with one slot per possible object. Training is on the same rendered pool of
the same split as AIR, for the same wall-clock budget, but it reads the labels:

- count: classification over 0..N;
- per slot: presence (binary), identity (categorical), position on the table (m),
  yaw as (cos, sin) and colour. Slots are matched to the true objects by the
  Hungarian algorithm on a position + identity cost (a set loss), so the slots'
  order does not matter.

Yaw is regressed as plain (cos yaw, sin yaw), as a regression network does without
knowledge of each object's symmetry: for a cube, yaw and yaw + 90 degrees are the same
image with different targets (the multimodal posterior AIR's renderer sidesteps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .air.networks import Encoder
from .data.prior import PriorConfig, prior_batches
from .data.tabletop import Tabletop, TabletopConfig
from .metrics import evaluate_planar
from .scene import PlanarObjects, SceneBatch
from .checkpoints import checkpoint_catalog, load_weights, read_checkpoint
from .training import TrainConfig, checkpoint_to_resume, render_pool, train_loop, training_device

POSITION_SCALE = 0.1  # metres per unit of the head's raw position output


@dataclass
class SupervisedConfig:
    max_objects: int = 3
    hidden: int = 256  # AIR's encoder width (AIRConfig.hidden)
    position_weight: float = 1.0  # Huber loss in cm (squared below 1 cm, linear above)
    identity_weight: float = 1.0
    yaw_weight: float = 1.0
    color_weight: float = 1.0


class Prediction(dict):
    """count_logits (B, N+1); presence_logits (B, N); identity_logits (B, N, C); position (B, N, 2) m;
    yaw_vector (B, N, 2) (cos, sin); color (B, N, 3) in (0, 1)."""


class SetRegressor(nn.Module):
    """(B, H, W, 3) images in [0, 1] -> Prediction of N object slots."""

    def __init__(self, config: SupervisedConfig, num_categories: int):
        super().__init__()
        self.config, self.C, N = config, num_categories, config.max_objects
        self.encoder = Encoder(config.hidden)
        self.slot_dim = 1 + num_categories + 2 + 2 + 3
        self.head = nn.Sequential(nn.Linear(config.hidden, 256), nn.ReLU(),
                                  nn.Linear(256, (N + 1) + N * self.slot_dim))

    def forward(self, images: torch.Tensor) -> Prediction:
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (B, H, W, 3), got {tuple(images.shape)}")
        N, C = self.config.max_objects, self.C
        out = self.head(self.encoder(images.permute(0, 3, 1, 2)))
        slots = out[:, N + 1:].view(-1, N, self.slot_dim)
        return Prediction(count_logits=out[:, :N + 1], presence_logits=slots[..., 0],
                          identity_logits=slots[..., 1:1 + C], position=slots[..., 1 + C:3 + C] * POSITION_SCALE,
                          yaw_vector=slots[..., 3 + C:5 + C], color=torch.sigmoid(slots[..., 5 + C:8 + C]))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> PlanarObjects:
        """The predicted count's most present slots, as B scenes of N slots."""
        p = self(images)
        count = p["count_logits"].argmax(-1)  # (B,)
        rank = p["presence_logits"].argsort(-1, descending=True).argsort(-1)  # 0 = most present
        present = rank < count[:, None]
        identity = p["identity_logits"].softmax(-1).max(-1)
        category = torch.where(present, identity.indices, -1)
        yaw = torch.atan2(p["yaw_vector"][..., 1], p["yaw_vector"][..., 0])
        score = torch.sigmoid(p["presence_logits"]) * identity.values  # the heads' confidence
        return PlanarObjects(category, p["position"], yaw, p["color"], score.detach())


def match_slots(position: torch.Tensor, identity_logits: torch.Tensor, true_category: torch.Tensor,
                true_position: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, (slot indices, true object indices) of the Hungarian matching on squared
    position distance (cm^2) minus the identity log-probability."""
    cost = (torch.cdist(position, true_position) * 100) ** 2 - identity_logits.log_softmax(-1).gather(
        2, true_category.clamp(min=0)[:, None, :].expand(-1, position.shape[1], -1))
    cost = cost.detach().cpu().numpy()
    pairs = []
    for b in range(len(cost)):
        objects = np.flatnonzero(true_category[b].cpu().numpy() >= 0)
        slots, k = linear_sum_assignment(cost[b][:, objects])
        pairs.append((slots, objects[k]))
    return pairs


def set_loss(p: Prediction, truth: SceneBatch, config: SupervisedConfig) -> tuple[torch.Tensor, dict]:
    """Scalar loss averaged over images, and diagnostics; truth's objects are matched to slots."""
    true = truth.planar()
    true_category, true_position, true_yaw = true.category, true.position, true.yaw
    pairs = match_slots(p["position"], p["identity_logits"], true_category, true_position)
    device = p["position"].device
    batch = torch.cat([torch.full((len(s),), b, dtype=torch.long, device=device) for b, (s, _) in enumerate(pairs)])
    slot = torch.from_numpy(np.concatenate([s for s, _ in pairs])).long().to(device)
    obj = torch.from_numpy(np.concatenate([o for _, o in pairs])).long().to(device)
    presence_target = torch.zeros_like(p["presence_logits"])
    presence_target[batch, slot] = 1.0
    loss = F.cross_entropy(p["count_logits"], truth.counts) + F.binary_cross_entropy_with_logits(
        p["presence_logits"], presence_target)
    if len(batch):
        B = len(pairs)
        yaw_target = torch.stack([true_yaw[batch, obj].cos(), true_yaw[batch, obj].sin()], -1)
        per_object = (config.identity_weight * F.cross_entropy(p["identity_logits"][batch, slot],
                                                                true_category[batch, obj], reduction="none")
                      + config.position_weight * F.smooth_l1_loss(
                          p["position"][batch, slot] * 100, true_position[batch, obj] * 100, reduction="none").sum(-1)
                      + config.yaw_weight * (p["yaw_vector"][batch, slot] - yaw_target).pow(2).sum(-1)
                      + config.color_weight * (p["color"][batch, slot] - truth.color[batch, obj]).pow(2).sum(-1))
        loss = loss + per_object.sum() / B
    return loss, {"objective": float(loss.detach()),
                  "mean_count": float(p["count_logits"].argmax(-1).float().mean())}


@torch.no_grad()
def evaluate(model: SetRegressor, images: torch.Tensor, truth: SceneBatch, catalog, batch_size: int = 256,
             pose_recalls: bool = False) -> dict:
    """The baseline's answer for images (B, H, W, 3) scored against a SceneBatch's planar truth
    (pose_recalls: BOP's ADD-S, MSSD and MSPD too, seen by the truth's camera)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted = PlanarObjects.cat([model.predict(chunk.to(device)).to("cpu")
                                   for chunk in torch.split(images, batch_size)])
    model.train(was_training)
    return evaluate_planar(predicted, truth.planar(), catalog, truth.camera if pose_recalls else None)


def load_supervised(path: str | Path, device: str | torch.device = "cpu") -> tuple[SetRegressor, dict]:
    """(model in eval mode on device, checkpoint dict); a clear error for a missing, corrupt or foreign file."""
    ckpt = read_checkpoint(path, "supervised")
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]), checkpoint_catalog(ckpt, path))
    model = SetRegressor(SupervisedConfig(**ckpt["supervised_config"]), len(data.catalog))
    load_weights(model, ckpt, path)
    model.eval()
    return model.to(device), ckpt


def train_supervised(out: str | Path, config: SupervisedConfig | None = None, train_config: TrainConfig | None = None,
                     data: Tabletop | None = None, resume: bool = False, progress: bool = True, log=print,
                     fresh: PriorConfig | None = None, device: str | torch.device | None = None) -> dict:
    """Trains the baseline on labelled renders, writing out/checkpoint.pt, history.json and curves.png.

    fresh: draw new labelled scenes every batch from the prior (data/prior.py, with its appearance
    nuisances, rendered by worker processes) instead of a fixed pool of cfg.train_pool renders, which
    the baseline memorised (99.7% identity on its pool, 44.7% on test: notes/air-training.md).
    device: where to train (the pools stay on the CPU; each batch moves)."""
    out = Path(out)
    device = training_device(device)
    data = data or Tabletop()
    ckpt, cfg = checkpoint_to_resume(out, resume, train_config or TrainConfig(), "supervised", log)
    if ckpt is not None:
        config = SupervisedConfig(**ckpt["supervised_config"])
        fresh = PriorConfig.from_dict(ckpt["prior_config"]) if ckpt.get("prior_config") else None
    config = config or SupervisedConfig(max_objects=data.config.max_objects)
    torch.manual_seed(cfg.seed)
    model = SetRegressor(config, len(data.catalog)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    val_images, val_truth = render_pool(data, cfg.val_split, cfg.val_size, progress)
    val_images = val_images.float() / 255
    if fresh is not None:
        batches = prior_batches(data, cfg.batch_size, fresh, seed=cfg.seed, start=(ckpt or {}).get("iteration", 0))

        def step_loss(index, iteration):
            images, truth = next(batches)
            return set_loss(model(images.to(device)), data.scene_batch(truth.to(device)), config)
        pool_size = 1
    else:
        pool, pool_truth = render_pool(data, cfg.split, cfg.train_pool, progress)

        def step_loss(index, iteration):
            images = pool[index].to(device).float() / 255
            return set_loss(model(images), pool_truth.select(index).to(device), config)
        pool_size = len(pool)

    payload = {"supervised_config": asdict(config), "train_config": asdict(cfg), "catalog": data.catalog.record(),
               "data_config": data.config.to_fields(), "prior_config": fresh.to_dict() if fresh else None}
    return train_loop(out, model, optimizer, cfg, step_loss, lambda: evaluate(model, val_images, val_truth, data.catalog),
                      pool_size, payload, ckpt, progress, log, desc="train-supervised",
                      objective_label="set loss (smoothed)", device=device)
