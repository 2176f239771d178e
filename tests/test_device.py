"""--device: the choice of device, and every tensor the computations make landing on the model's device.

Without a GPU the placement is checked by sending every tensor the project makes without naming a
device to PyTorch's 'meta' device while the models and data sit on the CPU: a tensor that should
have followed the model's device then meets a CPU tensor and the operation fails, as it would on
a GPU. Tests that need CUDA are skipped where PyTorch sees none.
"""

import sys
from dataclasses import replace

import pytest
import torch
from torch.overrides import TorchFunctionMode

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.model import AIR
from inverse_graphics.air.sleep import SLEEP_ARCHITECTURE, SleepConfig, sleep_loss
from inverse_graphics.air.train import evaluate, train_air_sleep
from inverse_graphics.air.wake import WakeConfig, wake_loss
from inverse_graphics.cli import main
from inverse_graphics.data.prior import PriorConfig
from inverse_graphics.devices import resolve_device
from inverse_graphics.optimise import OptimiseSettings, optimise, refine_with_second_guess
from inverse_graphics.refine import RefineSettings
from inverse_graphics.rendering.likelihood import make_planar_renderer
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.robot.frames import iter_frames
from inverse_graphics.robot.poses import FramePoseEstimator, PoseSettings
from inverse_graphics.robot.simulate import CaptureConditions, write_frames
from inverse_graphics.robot.view import frames_table_color, load_for_camera
from inverse_graphics.scene import PlanarObjects
from inverse_graphics.supervised import SetRegressor, SupervisedConfig, set_loss
from inverse_graphics.training import TrainConfig

SHIPPED = "assets/weights/air_elbo_tabletop_v1.pt"
SMALL = dict(hidden=64, max_steps=2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.linspace, torch.logspace,
             torch.eye, torch.tensor, torch.as_tensor, torch.rand, torch.randn, torch.randint, torch.randperm}
# Files that work on the CPU by design: reading frames and preparing their windows, the Open3D
# renderer, datasets and metrics.
CPU_SIDE = ("/robot/view.py", "/robot/window.py", "/robot/frames.py", "/robot/simulate.py", "/data/", "/metrics/",
            "/rendering/open3d_renderer.py", "/rendering/visibility.py")


class UnplacedTensorsOnMeta(TorchFunctionMode):
    """Tensors that the project's device-side code makes without naming a device go to 'meta'."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        unplaced = (func in FACTORIES or func is torch.from_numpy) and kwargs.get("device") is None
        if unplaced and _called_from_device_side_code():
            if func is torch.from_numpy:
                return func(*args, **kwargs).to("meta")
            if not (func is torch.as_tensor and isinstance(args[0], torch.Tensor)):
                kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def _called_from_device_side_code() -> bool:
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith(("torch/overrides.py", "torch/utils/_device.py")):
        frame = frame.f_back
    name = frame.f_code.co_filename if frame is not None else ""
    return "/inverse_graphics/" in name and not any(part in name for part in CPU_SIDE)


@pytest.fixture(scope="module")
def scenes(tabletop):
    truth = tabletop.sample("train", range(3))
    with torch.no_grad():
        batch = truth.to_batch(tabletop.catalog, tabletop.camera, tabletop.config.table)
        images = SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(batch).rgb
    return images, truth, batch


def test_the_harness_catches_a_tensor_made_without_a_device():
    """What the placement tests rely on: an unplaced tensor meeting a model's tensor fails."""
    weights = torch.ones(3)
    with UnplacedTensorsOnMeta():
        made_here = torch.zeros(3)  # this file is not the project's code: left alone
        assert made_here.device.type == "cpu"
        empty = PlanarObjects.empty(2)  # the project's code, no device named: meta
        assert empty.position.device.type == "meta"
        with pytest.raises(RuntimeError):
            weights + empty.yaw[0]


@pytest.mark.parametrize("extra", [{}, dict(dair=True), dict(count_estimator="concrete"),
                                   dict(identity_signal="local"), dict(renderer="open3d-fd")],
                         ids=["elbo", "dair", "concrete", "local", "open3d-fd"])
def test_air_elbo_and_inference_make_their_tensors_on_the_model_device(tabletop, scenes, extra):
    images, _, _ = scenes
    model = AIR(AIRConfig(**SMALL, **extra), tabletop.catalog, tabletop.camera, tabletop.config.table)
    with UnplacedTensorsOnMeta():
        loss, _ = model.loss(images, 0, 1.0)
        loss.backward()
        model.objects(model.infer(images, greedy=True))


def test_sleep_and_wake_phases_make_their_tensors_on_the_model_device(tabletop, scenes):
    images, truth, _ = scenes
    model = AIR(AIRConfig(**SMALL, **SLEEP_ARCHITECTURE), tabletop.catalog, tabletop.camera, tabletop.config.table)
    model.generative.fit_appearance(gain=True)
    yaw_orders = torch.tensor([c.yaw_symmetry_order() for c in tabletop.catalog.categories])
    with UnplacedTensorsOnMeta():
        sleep_loss(model.guide, images, model.background(), truth, yaw_orders, SleepConfig())[0].backward()
        wake_loss(model, images, WakeConfig(samples=2), 0)[0].backward()


def test_baseline_refinement_and_optimisation_make_their_tensors_on_the_input_device(tabletop, scenes):
    images, truth, batch = scenes
    regressor = SetRegressor(SupervisedConfig(), len(tabletop.catalog))
    renderer = make_planar_renderer("pytorch3d", tabletop.catalog)
    probs = torch.full((3, truth.slots, len(tabletop.catalog)), 1 / len(tabletop.catalog))
    with UnplacedTensorsOnMeta():
        set_loss(regressor(images), batch, SupervisedConfig())[0].backward()
        regressor.predict(images)
        refine_with_second_guess(renderer, images, truth, probs, tabletop.camera, tabletop.config.table,
                                 RefineSettings(steps=2))
        optimise(renderer, images[:1], tabletop.camera, tabletop.config.table, len(tabletop.catalog),
                 OptimiseSettings(max_objects=1, starts=1, refine=RefineSettings(steps=2)))


def test_robot_poses_fit_on_the_model_device(tmp_path):
    folder = write_frames(tmp_path / "frames", 1, CaptureConditions(), seed=3, progress=False)
    frame = next(iter(iter_frames(folder)))
    model, _ = load_for_camera(SHIPPED, frame.camera, frames_table_color([frame]))
    estimator = FramePoseEstimator(model, PoseSettings(max_objects=1))
    with UnplacedTensorsOnMeta():
        estimator.estimate(frame)


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@no_cuda
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    assert main(["infer", str(image_dir), "--model", SHIPPED, "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


@cuda
def test_cuda_renders_and_infers_as_the_cpu_does(tabletop, scenes):
    images, truth, batch = scenes
    renderer = SceneRenderer(tabletop.catalog, mode="soft")
    on_cpu = renderer(batch).rgb
    on_gpu = renderer(batch.to("cuda")).rgb
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().max() < 1e-3
    model = AIR(AIRConfig(**SMALL), tabletop.catalog, tabletop.camera, tabletop.config.table).eval()
    cpu_answer = model.objects(model.infer(images, greedy=True))
    model.to("cuda")
    gpu_answer = model.objects(model.infer(images.cuda(), greedy=True)).to("cpu")
    assert torch.equal(cpu_answer.category, gpu_answer.category)
    assert (cpu_answer.position - gpu_answer.position).abs().max() < 1e-3


@cuda
def test_cuda_training_writes_a_checkpoint_that_resumes_on_the_cpu(tmp_path, tabletop):
    cfg = TrainConfig(iterations=3, batch_size=4, val_size=8, val_every=3, checkpoint_every=1)
    config = AIRConfig(**SMALL, **SLEEP_ARCHITECTURE)
    sleep = SleepConfig(prior=PriorConfig(workers=0))
    run = tmp_path / "run"
    train_air_sleep(run, config, cfg, tabletop, sleep, progress=False, log=lambda m: None, device="cuda")
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["device"].startswith("cuda") and "cuda" in ckpt["torch_rng_per_rank"][0]
    result = train_air_sleep(run, config, replace(cfg, iterations=5), tabletop, resume=True, progress=False,
                             log=lambda m: None, device="cpu")
    assert result["iteration"] == 5


def test_evaluate_takes_cpu_images_for_a_model_anywhere(tabletop, scenes):
    """evaluate moves each chunk to the model's device and the answers back (here both CPU)."""
    images, _, batch = scenes
    model = AIR(AIRConfig(**SMALL), tabletop.catalog, tabletop.camera, tabletop.config.table)
    metrics = evaluate(model, images, batch)
    assert 0.0 <= metrics["count_acc"] <= 1.0
