import colorsys
import hashlib
import json

import numpy as np
import pytest
import torch

from inverse_graphics.cli import main
from inverse_graphics.data.bop import generate_split, read_split
from inverse_graphics.data.tabletop import SPLITS


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sampling_is_deterministic_and_independent_of_batching(tabletop):
    whole = tabletop.sample("test", range(10))
    one = tabletop.sample("test", [7])
    for name in ("category", "position", "yaw", "color"):
        assert torch.equal(getattr(whole, name)[7], getattr(one, name)[0])
    other = tabletop.sample("val", range(10))
    assert not torch.equal(whole.position, other.position)


@pytest.mark.parametrize("split", list(SPLITS))
def test_split_counts_and_no_interpenetration(tabletop, split):
    scenes = tabletop.sample(split, range(150))
    counts = (scenes.category >= 0).sum(1)
    assert set(counts.tolist()) == set(SPLITS[split].counts)
    # counts are drawn uniformly over the allowed ones (150 scenes: each within half of its share)
    share = 150 / len(SPLITS[split].counts)
    frequency = {c: int((counts == c).sum()) for c in SPLITS[split].counts}
    assert all(0.5 * share <= n <= 1.5 * share for n in frequency.values()), (split, frequency)
    # a scene's objects fill its first slots
    N = scenes.category.shape[1]
    assert torch.equal(scenes.category >= 0, torch.arange(N) < counts[:, None])
    e = tabletop.config.placement_half_extent
    for b in range(150):
        present = (scenes.category[b] >= 0).nonzero()[:, 0].tolist()
        for n in present:
            assert scenes.position[b, n].abs().max() <= e + 1e-6
            assert 0 <= scenes.yaw[b, n] < 2 * np.pi
            for m in present:
                if m > n:
                    gap = (scenes.position[b, n] - scenes.position[b, m]).norm()
                    reach = tabletop.footprint[scenes.category[b, n]] + tabletop.footprint[scenes.category[b, m]]
                    assert gap >= reach + tabletop.config.min_gap - 1e-6, (split, b)
    assert scenes.category.max() < len(tabletop.catalog)
    # identity and colour are independent: every category shows up, in every split, with hues
    # spread around the colour wheel (in at least 3 of its 4 quarters)
    for c in range(len(tabletop.catalog)):
        hues = [colorsys.rgb_to_hsv(*rgb)[0] for rgb in scenes.color[scenes.category == c].tolist()]
        assert len(hues) >= 10, (split, tabletop.catalog[c].name, len(hues))
        assert len({int(h * 4) % 4 for h in hues}) >= 3, (split, tabletop.catalog[c].name, hues)
    # each split draws its own scenes: no object position recurs in another split's first 150 scenes
    mine = {tuple(p) for p in scenes.position[scenes.category >= 0].tolist()}
    for other in SPLITS:
        if other != split:
            theirs = tabletop.sample(other, range(150))
            assert not mine & {tuple(p) for p in theirs.position[theirs.category >= 0].tolist()}, (split, other)


def test_generated_files_are_byte_identical_and_read_back(tabletop, tmp_path):
    a = generate_split(tabletop, "test", tmp_path / "a", 12, chunk=5, progress=False).parent
    b = generate_split(tabletop, "test", tmp_path / "b", 12, chunk=12, progress=False).parent
    assert _digest(a) == _digest(b)

    rgb, depth, batch = read_split(a, "test", tabletop.catalog)
    truth = tabletop.scene_batch(tabletop.sample("test", range(12)))
    rendered, _ = tabletop.render("test", range(12))
    assert torch.equal(batch.category, truth.category)
    assert torch.allclose(batch.translation, truth.translation, atol=1e-6)  # metres, via BOP millimetres
    assert torch.allclose(batch.rotation, truth.rotation, atol=1e-6)
    assert torch.allclose(batch.color, truth.color)
    assert torch.equal((rgb * 255).round(), (rendered.rgb.clamp(0, 1) * 255).round())
    assert (depth - rendered.depth).abs().max() <= 0.05e-3 + 1e-7  # 0.1 mm PNG steps

    scene_gt = json.loads((a / "test" / "000000" / "scene_gt.json").read_text())
    assert [len(scene_gt[str(b)]) for b in range(12)] == truth.counts.tolist()
    for b in range(12):
        for n, entry in enumerate(scene_gt[str(b)]):
            R = np.reshape(entry["cam_R_m2c"], (3, 3))
            assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
            assert 200 < entry["cam_t_m2c"][2] < 1000  # millimetres
            # the model's origin, in camera millimetres, projects onto that object's pixels
            u, v, w = tabletop.camera.K.double().numpy() @ np.array(entry["cam_t_m2c"])
            rows, cols = (rendered.instance[b] == n).nonzero(as_tuple=True)
            assert float(((cols - u / w) ** 2 + (rows - v / w) ** 2).sqrt().min()) < 1.5, (b, n, u / w, v / w)


def test_generation_resumes_and_reports_corrupt_files(tabletop, tmp_path):
    root = tmp_path / "data"
    generate_split(tabletop, "val", root, 6, progress=False)
    before = _digest(root)
    (root / "val" / "000000" / "rgb" / "000003.png").unlink()
    generate_split(tabletop, "val", root, 6, progress=False)
    assert _digest(root) == before

    (root / "val" / "000000" / "depth" / "000002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="000002.png"):
        read_split(root, "val", tabletop.catalog)
    (root / "val" / "000000" / "scene_gt.json").write_text("{broken")
    with pytest.raises(ValueError, match="scene_gt.json"):
        read_split(root, "val", tabletop.catalog)
    with pytest.raises(FileNotFoundError, match="no BOP scene folders"):
        read_split(root, "test", tabletop.catalog)


def test_cli_generate_writes_bop_and_contact_sheet(tmp_path, capsys):
    assert main(["generate", "--split", "extrap-test", "--out", str(tmp_path), "--num", "10", "--quiet"]) == 0
    assert (tmp_path / "extrap-test_contact_sheet.png").stat().st_size > 1000
    assert (tmp_path / "camera.json").is_file() and (tmp_path / "models" / "obj_000001.ply").is_file()
    assert main(["generate", "--split", "test", "--out", str(tmp_path), "--num", "5000", "--quiet"]) == 2
    assert "has 1000 scenes" in capsys.readouterr().err
