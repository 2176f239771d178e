"""AIR's configuration: a small set of named values with defaults, and the annealing schedules."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class AIRConfig:
    max_steps: int = 3
    dair: bool = False
    renderer: str = "pytorch3d"  # likelihood renderer, rendering.likelihood.RENDERER_NAMES
    count_estimator: str = "reinforce"  # z_pres gradients: 'reinforce' (NVIL) or 'concrete' (relaxed)
    # Identity gradients: 'global' (score function, the ELBO as reward), 'local' (score function, the
    # log-likelihood of the pixels around the object as reward) or 'enumerate' (exact expectation over
    # the categories at one random step per image, the others held at their samples).
    identity_signal: str = "enumerate"
    enumerate_images: int = 8  # images per batch whose identity is enumerated (each costs C renders)
    # q(yaw | identity, x): a yaw proposal per category, each trained (in the enumeration) on the
    # render of its own category whatever q(identity) currently favours. With one shared yaw, the
    # yaw-free sphere explains every object best until yaw is right, and q(identity) moved there.
    yaw_per_category: bool = True
    # Identity's likelihood is tempered by this factor at first, annealed geometrically to 1: while
    # yaw is still unknown a sphere (yaw-free) explains every object best, and a q(identity) that
    # collapses onto it early never lets yaw learn for the other shapes.
    identity_temperature_start: float = 30.0
    identity_temperature_steps: int = 600
    # q(identity) gets no likelihood signal for this many iterations (with 'elbo', only its KL to
    # the prior), so that yaws can learn first; the temperature anneal starts after.
    identity_hold_steps: int = 0
    # How q(identity) learns from the enumeration: 'rws' (fit to the enumerated posterior, as in
    # reweighted wake-sleep) or 'elbo' (the ELBO's exact gradient; it collapses onto one category).
    identity_objective: str = "rws"
    hidden: int = 256
    glimpse_px: int = 24  # window side in image pixels
    glimpse_size: int = 16  # window resampled to this many pixels (= glimpse_px: native resolution)
    # 'shallow' (2 conv layers), 'deep' (4) or 'strided' (4, the first at stride 2, no pooling):
    # resampling the glimpse to fewer pixels and reading it
    # with 2 layers cost about 20 points of identity in a measured crop classifier (notes/air-training.md).
    glimpse_encoder: str = "shallow"
    # The second glimpse's encoder (None: glimpse_encoder), where identity and yaw are read.
    glimpse_encoder2: str | None = None
    # Identity, yaw and colour read from a second glimpse taken where the first placed the object:
    # glimpses within 1.5 px of the object gave 96-98% identity, beyond it 85-88% (same notes).
    second_glimpse: bool = False
    # The second glimpse also places the object (an offset from its own centre): the first glimpse,
    # where the attention points, left the position 7.6 mm off at 1000 sleep iterations.
    second_glimpse_offset: bool = False
    # The second glimpse is read again this many times, each where the last one placed the object
    # (no new weights). The sleep phase trains it on glimpses about a pixel from the object; the
    # shipped guide with 0 / 2 repeats: identity 93.1 / 95.8%, 4.68 / 4.40 mm (tabletop-v1 test,
    # `glimpse_repeats_comparison` in benchmarks/results/air_tabletop.json).
    glimpse_repeats: int = 0
    # Inhibition of return: the where-map's logits drop by 50 x a Gaussian of this std (where-map
    # cells) around each object already found. Trained at 1.0 the guide undercounted twice as many
    # test scenes; where it misses a close neighbour it does look at it, and presence says no
    # (benchmarks/count_errors.py, results/count_errors*.txt).
    found_suppression_cells: float = 1.5
    # Inference (AIR.infer) reads images balanced to the table first (rendering.appearance.
    # balance_to_table: a gain per image and channel that makes the image's median colour the
    # table's render), the exposure, white balance and table albedo undone in closed form. The
    # sleep phase trains on the prior's images as drawn; the wake phase reads them as they are too
    # (its wake-p fits the table's albedo to them). On 300 val scenes through
    # the appearance split's capture (benchmarks/white_balance.py, results/white_balance_val.txt)
    # the fp28 seeds counted 90.0-91.0% and identified 83.2-89.9% with it, 79.0-85.0% and
    # 73.3-82.2% without; on clean val scenes, whose table is the model's, within 0.5 points.
    balance_to_table: bool = True
    # Greedy inference counts another object where q(z_pres = 1) is above this.
    presence_threshold: float = 0.5
    # Greedy inference stops where a step places its object within this many pixels of an object
    # already found (0: never). The prior places no two objects closer than their footprints allow
    # (7 px apart at the least in tabletop-v1 test scenes), so such a step is found again, not new:
    # every overcounted test scene of the cp28 runs was one (benchmarks/count_errors.py). Off: on
    # 500 val scenes, stopping there turned as many right counts into undercounts as it removed
    # overcounts (benchmarks/results/duplicate_px_val.txt).
    duplicate_px: float = 0.0
    # With duplicate_px: True, such a step is dropped and the next step goes on (it may find the
    # object the found-again step missed); False, inference stops there. On 500 val scenes the two
    # differ in one scene of 1500 for the fp28 guides (benchmarks/results/duplicate_skip_val.txt).
    duplicate_skip: bool = False
    # AIR + refinement also tries the proposal of the step that stopped where its q(another object)
    # is above this, and keeps it where render-and-compare says it pays for itself (count revision).
    # On 300 val scenes (benchmarks/refine_settings.py --part candidates) 0.1 / 0.01 / 0.001 tried
    # 6 / 15 / 33 scenes; count 99.0 / 98.7 / 99.0% (98.7% without), ADD-S 95.1% at each (94.4%).
    refine_candidate_prob: float = 0.1
    # z_pres also reads the first glimpse ('is there an object where the attention points?'): from the
    # LSTM state and the attention's peak alone, presence stalled at 97.8% of a trace's decisions right.
    glimpse_presence: bool = False
    # z_pres also reads the first glimpse beside marks of where the objects already found are
    # (networks.PresenceEncoder): without them a glimpse on a missed object 8-13 px from a found one
    # looks like a glimpse on the found one, and the guide stopped there (benchmarks/count_errors.py).
    presence_sees_found: bool = False
    found_mark_std_px: float = 3.0  # the marks' Gaussian std, pixels
    encoder_channels: tuple = (32, 64, 64, 128)  # the image encoder's conv layers
    where_map: str = "full"  # 'full' or 'pooled' (networks.WHERE_MAPS)
    pixel_std: float = 0.1  # Gaussian likelihood std per pixel and channel
    blur_levels_px: tuple = (0.0, 4.0, 12.0)  # likelihood pyramid: the image and blurred copies
    level_weights: tuple = (1.0, 4.0, 30.0)  # per level (blurring shrinks differences; these even out gradients)
    fine_weight_start: float = 0.05  # the sharp level's weight is annealed from this to 1...
    fine_anneal_steps: int = 1500  # ...over these iterations (coarse to fine)
    prior_position_std: float = 0.08  # metres
    prior_color_std: float = 1.5  # colour logits
    z_pres_prior_start: float = 0.9  # p(another object | one more so far), annealed linearly...
    z_pres_prior_end: float = 0.5  # ...to this
    z_pres_prior_anneal_steps: int = 2000
    concrete_temperature: float = 0.5
    overlap_nats_per_mm: float = 200.0  # prior: objects rest side by side, never inside one another

    def __post_init__(self):
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"AIR's max_steps (objects per image) must be a positive whole number, "
                             f"got {self.max_steps!r}")
        if not isinstance(self.enumerate_images, int) or self.enumerate_images < 1:
            raise ValueError(f"AIR's enumerate_images must be a positive whole number, got {self.enumerate_images!r}")
        if not isinstance(self.glimpse_repeats, int) or self.glimpse_repeats < 0:
            raise ValueError(f"AIR's glimpse_repeats must be a whole number >= 0, got {self.glimpse_repeats!r}")
        if self.glimpse_repeats and not (self.second_glimpse and self.second_glimpse_offset):
            raise ValueError("AIR's glimpse_repeats needs second_glimpse and second_glimpse_offset (a glimpse "
                             "that places the object, so the next one can be taken there)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blur_levels_px"] = list(self.blur_levels_px)
        d["level_weights"] = list(self.level_weights)
        d["encoder_channels"] = list(self.encoder_channels)
        return d


def air_config_from_dict(d: dict) -> AIRConfig:
    # checkpoints from before these options had one shared yaw and the ELBO identity objective
    d = {"yaw_per_category": False, "identity_objective": "elbo", "glimpse_encoder": "shallow",
         "second_glimpse": False, "second_glimpse_offset": False, **d}
    d.pop("extra", None)  # a field that was never read (the shipped checkpoints hold an empty one)
    return AIRConfig(**{**d, "blur_levels_px": tuple(d["blur_levels_px"]), "level_weights": tuple(d["level_weights"]),
                        "encoder_channels": tuple(d.get("encoder_channels", AIRConfig.encoder_channels))})


def anneal(iteration: int, steps: int, start: float, end: float, kind: str = "linear") -> float:
    """A schedule's value at `iteration`: `start` until iteration 0, `end` from `steps` on, in between
    'linear' (start + f (end - start)) or 'geometric' (start^(1 - f) end^f), f = iteration / steps."""
    frac = min(1.0, max(0, iteration) / max(1, steps))
    if kind == "linear":
        return start + frac * (end - start)
    if kind == "geometric":
        return start ** (1 - frac) * end ** frac
    raise ValueError(f"unknown schedule {kind!r}; choose 'linear' or 'geometric'")
