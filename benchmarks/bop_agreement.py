"""Checks our BOP pose recalls (inverse_graphics.metrics.bop_recall) against the official BOP
toolkit (github.com/thodan/bop_toolkit) on the same files: a tabletop dataset written in the BOP
layout and one or more BOP results CSVs.

    python benchmarks/bop_agreement.py --toolkit /path/bop_toolkit --toolkit-python /path/venv/bin/python \\
        --dataset DATASETS/tabletop --results METHOD_tabletop-test.csv [MORE.csv ...] [--split test] \\
        [--toolkit-commit SHA] [--out benchmarks/results/bop_agreement.json]

Ours: the ground truth is read from the dataset's files (scene_gt.json, scene_gt_info.json's
visib_fract, scene_camera.json's cam_K, the image width from camera.json), each CSV with
read_bop_results (mm -> metres), and bop_recalls scores them with the evaluation models of the
dataset's own catalog (models/). Estimates for an image the ground truth does not have are an error.
Toolkit: the same CSV goes through the toolkit's scripts/eval_calc_errors.py and
scripts/eval_calc_scores.py as scripts/eval_bop19_pose.py runs them (BOP19 settings: n_top -1,
visib_gt_min -1, max_sym_disc_step 0.01; MSSD 0.05-0.5 x diameter, MSPD 5-50 px at 640 px wide),
plus error 'adi' at 0.1 x diameter, BOP's ADD-S. The only change made to the toolkit is the one a
BOP user makes for a new dataset: its name registered in dataset_params.py, here in a copy of
bop_toolkit_lib in a temporary folder (the toolkit folder itself is not touched). The toolkit needs
numpy < 2 and is run by --toolkit-python, its own interpreter (no renderer needed: VSD is not run).

A BOP user can check the figures by hand in three commands:

    inverse-graphics generate --split test --num 100 --out DATASETS/tabletop   # our dataset, BOP layout
    # register 'tabletop' in the toolkit's bop_toolkit_lib/dataset_params.py: obj_ids and
    # symmetric_obj_ids (keys of models_eval/models_info.json), and a get_split_params branch with
    # p["scene_ids"] (the folders under test/) and p["im_size"] (camera.json's width, height)
    BOP_PATH=DATASETS BOP_RESULTS_PATH=RESULTS BOP_EVAL_PATH=EVAL python scripts/eval_bop19_pose.py \\
        --result_filenames=METHOD_tabletop-test.csv --num_workers=1          # also runs VSD (renderer)

or let this script do the last two. The dataset's folder name is its BOP name ('tabletop'; no
'_', '-' or '.'); a CSV is linked under the name the toolkit parses, METHOD_tabletop-SPLIT.csv.

Writes benchmarks/results/bop_agreement.json: per CSV our {adds, mssd, mspd} and the toolkit's
{adi, mssd, mspd} recalls (fractions in [0, 1]), their absolute differences in percentage points,
the largest difference and whether it is within half a point; the toolkit commit, the settings and
the command line.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from inverse_graphics.assets import ObjectCatalog  # noqa: E402
from inverse_graphics.data.bop import read_bop_results, split_folder, targets_file  # noqa: E402
from inverse_graphics.files import atomic_write_json  # noqa: E402
from inverse_graphics.metrics.bop_recall import ImagePoses, bop_recalls  # noqa: E402
from inverse_graphics.metrics.evaluate import evaluation_models  # noqa: E402

OUT = ROOT / "results" / "bop_agreement.json"
TOLERANCE_POINTS = 0.5  # agreement: every recall within half a percentage point

# The toolkit's BOP19 settings, written out here as scripts/eval_bop19_pose.py sets them (kept
# apart from our own constants so that a change on our side shows up as a disagreement).
N_TOP = -1  # per image and object, the top inst_count estimates
VISIB_GT_MIN = -1  # valid ground truth: the inst_count most visible instances of each target
MAX_SYM_DISC_STEP = 0.01
TOOLKIT_THRESHOLDS = {  # error type -> correctness thresholds (x diameter; MSPD px at 640 px wide)
    "mssd": list(np.arange(0.05, 0.51, 0.05)),
    "mspd": list(np.arange(5, 51, 5)),
    "adi": [0.1],  # eval_calc_scores.py's default for ad/adi
}


def require(path: Path, what: str) -> Path:
    """path, or SystemExit naming what is missing."""
    if not path.exists():
        raise SystemExit(f"bop_agreement: missing {what}: {path}")
    return path


def load_json(path: Path, what: str):
    try:
        return json.loads(require(path, what).read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"bop_agreement: {path} is not valid JSON: {exc}") from exc


def scene_folders(dataset: Path, split: str) -> list[Path]:
    """The split's BOP scene folders (six-digit names) that hold a scene_gt.json."""
    split_dir = require(dataset / split_folder(split), f"split folder of '{split}'")
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d{6}", p.name)
                     and (p / "scene_gt.json").is_file())
    if not folders:
        raise SystemExit(f"bop_agreement: no scene folders with scene_gt.json in {split_dir}")
    return folders


def read_truth(dataset: Path, split: str) -> dict[tuple[int, int], tuple[ImagePoses, tuple]]:
    """{(scene_id, im_id): (ground truth, cam_K as 9 floats)} from the split's scene_gt.json,
    scene_gt_info.json (visib_fract) and scene_camera.json; poses in metres, K in pixels."""
    truth = {}
    for folder in scene_folders(dataset, split):
        gts = load_json(folder / "scene_gt.json", "ground truth")
        infos = load_json(folder / "scene_gt_info.json", "ground-truth visibility")
        cams = load_json(folder / "scene_camera.json", "camera file")
        for im, gt in gts.items():
            if im not in infos or im not in cams or len(infos[im]) != len(gt):
                raise SystemExit(f"bop_agreement: {folder} image {im}: scene_gt_info.json or scene_camera.json "
                                 "does not match scene_gt.json")
            poses = ImagePoses([int(g["obj_id"]) for g in gt], [g["cam_R_m2c"] for g in gt],
                               np.array([g["cam_t_m2c"] for g in gt], float).reshape(-1, 3) / 1000.0,
                               visib_fract=[float(i["visib_fract"]) for i in infos[im]])
            truth[(int(folder.name), int(im))] = (poses, tuple(float(v) for v in cams[im]["cam_K"]))
    return truth


def read_estimates(csv: Path, images: set[tuple[int, int]]) -> dict[tuple[int, int], ImagePoses]:
    """{(scene_id, im_id): estimates} of a results CSV, t in metres; every row must be an image of
    `images`. Warns where an image's rows give different times (eval_bop19_pose.py would refuse)."""
    try:
        rows = read_bop_results(require(csv, "results CSV"))
    except ValueError as exc:
        raise SystemExit(f"bop_agreement: {exc}") from exc
    by_image: dict[tuple[int, int], list[dict]] = {}
    for row in rows:
        by_image.setdefault((row["scene_id"], row["im_id"]), []).append(row)
    unknown = sorted(set(by_image) - images)
    if unknown:
        raise SystemExit(f"bop_agreement: {csv} has estimates for {len(unknown)} images the ground truth does not "
                         f"have, e.g. scene {unknown[0][0]} image {unknown[0][1]}")
    if any(len({r["time"] for r in image}) > 1 for image in by_image.values()):
        print(f"warning: {csv}: times differ within an image (eval_bop19_pose.py would refuse the file)")
    return {key: ImagePoses([r["obj_id"] for r in image], [r["R"] for r in image],
                            np.array([r["t"] for r in image]).reshape(-1, 3) / 1000.0,
                            score=[r["score"] for r in image])
            for key, image in by_image.items()}


def our_recalls(truth: dict, estimates: dict, models: dict, image_width: int) -> dict:
    """Our recalls (fractions) over the images of `truth`. bop_recalls takes one K, so images are
    scored per camera and the recalls combined weighted by targets (exact: same denominators)."""
    by_camera: dict[tuple, list] = {}
    for key, (gt, K) in sorted(truth.items()):
        empty = ImagePoses([], np.zeros((0, 3, 3)), np.zeros((0, 3)))
        by_camera.setdefault(K, []).append((estimates.get(key, empty), gt))
    sums, targets = {"adds": 0.0, "mssd": 0.0, "mspd": 0.0}, 0
    for K, pairs in by_camera.items():
        r = bop_recalls([e for e, _ in pairs], [g for _, g in pairs], models, np.array(K).reshape(3, 3), image_width)
        for name in sums:
            sums[name] += r[f"{name}_recall"] * r["targets"]
        targets += r["targets"]
    return {**{name: s / max(1, targets) for name, s in sums.items()}, "targets": targets}


def register_dataset(source: str, name: str, obj_ids: list[int], symmetric_ids: list[int],
                     scene_ids: list[int], im_size: tuple[int, int]) -> str:
    """The text of the toolkit's dataset_params.py with dataset `name` registered as a BOP user
    registers a new dataset: its object ids, its symmetric ones (used only by error 'ad'), and a
    get_split_params branch with the split's scene ids and image size (width, height) in pixels."""
    anchors = [(r"\n(\s*)obj_ids = \{\n", obj_ids), (r"\n(\s*)symmetric_obj_ids = \{\n", symmetric_ids)]
    for pattern, ids in anchors:
        found = list(re.finditer(pattern, source))
        if len(found) != 1:
            raise SystemExit("bop_agreement: the toolkit's dataset_params.py has another layout; cannot register")
        line = f'{found[0].group(1)}    "{name}": {list(ids)},  # registered by benchmarks/bop_agreement.py\n'
        source = source[:found[0].end()] + line + source[found[0].end():]
    start = source.find("def get_split_params(")
    branch = re.compile(r"\n    if dataset_name == ").search(source, max(start, 0))
    if start < 0 or branch is None:
        raise SystemExit("bop_agreement: the toolkit's dataset_params.py has another layout; cannot register")
    ours = (f'\n    if dataset_name == "{name}":  # registered by benchmarks/bop_agreement.py\n'
            f'        p["scene_ids"] = {list(scene_ids)}\n'
            f'        p["im_size"] = ({im_size[0]}, {im_size[1]})\n'
            f'    elif dataset_name == ')
    return source[:branch.start()] + ours + source[branch.end():]


def pristine_dataset_params(toolkit: Path, name: str) -> str:
    """The toolkit's dataset_params.py text, without `name` (a pristine dataset_params.py.orig
    kept beside an already patched file is used instead)."""
    lib = require(toolkit / "bop_toolkit_lib", "toolkit library folder")
    for path in (lib / "dataset_params.py", lib / "dataset_params.py.orig"):
        if path.is_file() and f'"{name}"' not in (text := path.read_text()):
            return text
    raise SystemExit(f"bop_agreement: {lib / 'dataset_params.py'} already registers '{name}' and no pristine "
                     "dataset_params.py.orig is beside it; point --toolkit at an unmodified toolkit")


def toolkit_recalls(toolkit: Path, python: str, dataset: Path, split: str, csv: Path, work: Path) -> dict:
    """The toolkit's recalls of one results CSV (fractions): average recalls of mssd and mspd over
    their thresholds and adi at 0.1 x diameter, plus its target and ground-truth counts.

    work: an empty folder for the registered copy of bop_toolkit_lib, the linked CSV, the toolkit's
    errors and scores (eval/) and its logs (logs/)."""
    name, models_eval = dataset.name, dataset / "models_eval"
    info = {int(k): v for k, v in load_json(models_eval / "models_info.json", "evaluation models' info").items()}
    for obj_id in info:
        require(models_eval / f"obj_{obj_id:06d}.ply", "evaluation model")
    camera = load_json(dataset / "camera.json", "dataset camera")
    source = pristine_dataset_params(toolkit, name)
    lib = work / "lib" / "bop_toolkit_lib"
    shutil.copytree(toolkit / "bop_toolkit_lib", lib, ignore=shutil.ignore_patterns("__pycache__", "tests", "*.orig"))
    symmetric = [o for o in sorted(info) if info[o].get("symmetries_discrete") or info[o].get("symmetries_continuous")]
    scenes = [int(f.name) for f in scene_folders(dataset, split)]
    (lib / "dataset_params.py").write_text(register_dataset(source, name, sorted(info), symmetric, scenes,
                                                            (int(camera["width"]), int(camera["height"]))))
    method = re.sub(r"[^A-Za-z0-9]", "", csv.name.split("_")[0].removesuffix(".csv")) or "method"
    result_name = f"{method}_{name}-{split}"
    for sub in ("results", "eval", "logs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "results" / f"{result_name}.csv").symlink_to(csv.resolve())
    env = {**os.environ, "PYTHONPATH": str(work / "lib"), "BOP_PATH": str(dataset.parent),
           "BOP_RESULTS_PATH": str(work / "results"), "BOP_EVAL_PATH": str(work / "eval"), "BOP_NUM_WORKERS": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(script: str, args: list[str], log: str) -> str:
        cmd = [python, str(toolkit / "scripts" / script), *args]
        done = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(work / "logs" / log, "a") as f:
            f.write(f"$ {shlex.join(cmd)}\n{done.stdout}\n")
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-15:])
            raise SystemExit(f"bop_agreement: the toolkit failed (rc {done.returncode}) on {csv}:\n"
                             f"$ {shlex.join(cmd)}\n{tail}")
        return done.stdout

    check = "import bop_toolkit_lib.dataset_params as d; print(d.__file__)"
    used = subprocess.run([python, "-c", check], cwd=work, env=env, capture_output=True, text=True)
    if used.returncode != 0 or Path(used.stdout.strip()).resolve() != (lib / "dataset_params.py").resolve():
        raise SystemExit(f"bop_agreement: {python} does not import the registered copy of bop_toolkit_lib "
                         f"({used.stdout.strip() or used.stderr.strip()[-300:]})")
    common = [f"--eval_path={work / 'eval'}", f"--datasets_path={dataset.parent}",
              f"--targets_filename={targets_file(split)}"]
    out = {}
    for error, thresholds in TOOLKIT_THRESHOLDS.items():
        run("eval_calc_errors.py", [f"--n_top={N_TOP}", f"--error_type={error}",
                                    f"--result_filenames={result_name}.csv", f"--results_path={work / 'results'}",
                                    f"--max_sym_disc_step={MAX_SYM_DISC_STEP}", "--skip_missing=1", "--num_workers=1",
                                    *common], f"errors_{error}.log")
        error_dir = Path(result_name) / f"error={error}_ntop={N_TOP}"
        recalls = []
        for th in thresholds:
            run("eval_calc_scores.py", [f"--error_dir_paths={error_dir}", f"--visib_gt_min={VISIB_GT_MIN}",
                                        f"--correct_th_{error}={th}", *common], f"scores_{error}.log")
            signature = f"th={float(th):.3f}_min-visib={VISIB_GT_MIN:.3f}"  # the toolkit's scores file name
            scores = load_json(work / "eval" / error_dir / f"scores_{signature}.json", "toolkit scores")
            recalls.append(float(scores["recall"]))
        out[error] = float(np.mean(recalls))
    return {**out, "targets": int(scores["targets_count"]), "gt_count": int(scores["gt_count"])}


def toolkit_commit(toolkit: Path, given: str | None) -> str:
    """The commit given, else the toolkit checkout's HEAD, else 'unknown'."""
    if given:
        return given
    try:
        done = subprocess.run(["git", "-C", str(toolkit), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def dataset_rows_only(csv: Path, images: set[tuple[int, int]], folder: Path) -> Path:
    """A copy of the CSV (same name, in folder) with only the rows of images the dataset has: a
    benchmark's 1000-scene CSV checked on a dataset of its first scenes."""
    lines = csv.read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if tuple(int(v) for v in line.split(",")[:2]) in images]
    (folder / csv.name).write_text("\n".join(kept) + "\n")
    return folder / csv.name


def compare(csv: Path, args, truth: dict, models: dict, width: int) -> dict:
    """One CSV's recalls on both sides and their absolute differences in percentage points."""
    with tempfile.TemporaryDirectory(prefix="bop_agreement_") as work:
        if args.dataset_images_only:
            (Path(work) / "csv").mkdir()
            csv = dataset_rows_only(csv, set(truth), Path(work) / "csv")
        ours = our_recalls(truth, read_estimates(csv, set(truth)), models, width)
        theirs = toolkit_recalls(args.toolkit, args.toolkit_python, args.dataset, args.split, csv, Path(work))
    diff = {"adds_vs_adi": 100 * abs(ours["adds"] - theirs["adi"]),
            "mssd": 100 * abs(ours["mssd"] - theirs["mssd"]), "mspd": 100 * abs(ours["mspd"] - theirs["mspd"])}
    print(f"{csv.name}: ours adds {ours['adds']:.4f} mssd {ours['mssd']:.4f} mspd {ours['mspd']:.4f} "
          f"({ours['targets']} targets) | toolkit adi {theirs['adi']:.4f} mssd {theirs['mssd']:.4f} "
          f"mspd {theirs['mspd']:.4f} ({theirs['targets']} targets) | max diff {max(diff.values()):.3f} points")
    return {"ours": ours, "toolkit": theirs, "abs_diff_points": diff}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toolkit", type=Path, required=True, help="the BOP toolkit folder (bop_toolkit_lib/, scripts/)")
    p.add_argument("--toolkit-python", required=True, help="python with the toolkit's requirements (numpy < 2)")
    p.add_argument("--dataset", type=Path, required=True, help="dataset root; its folder name is the BOP name")
    p.add_argument("--results", type=Path, nargs="+", required=True,
                   help="BOP results CSVs (METHOD_tabletop-SPLIT.csv)")
    p.add_argument("--split", default="test")
    p.add_argument("--toolkit-commit", default=None, help="the toolkit's commit (default: git HEAD, else 'unknown')")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--dataset-images-only", action="store_true",
                   help="drop the CSVs' rows for images the dataset does not have (a dataset of the first scenes)")
    args = p.parse_args(argv)
    args.toolkit, args.dataset = args.toolkit.resolve(), args.dataset.resolve()
    require(args.toolkit / "scripts" / "eval_calc_errors.py", "BOP toolkit (scripts/eval_calc_errors.py)")
    if shutil.which(args.toolkit_python) is None:
        raise SystemExit(f"bop_agreement: --toolkit-python {args.toolkit_python} is not an executable")
    if re.search(r"[-_.]", args.dataset.name):
        raise SystemExit(f"bop_agreement: dataset folder name {args.dataset.name!r} may not hold '-', '_' or '.'")
    for path in (args.dataset / "camera.json", args.dataset / "models" / "models_info.json",
                 args.dataset / targets_file(args.split), *args.results):
        require(path, "dataset file" if path not in args.results else "results CSV")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    catalog = ObjectCatalog.load(args.dataset / "models")
    width = int(load_json(args.dataset / "camera.json", "dataset camera")["width"])
    truth = read_truth(args.dataset, args.split)
    models = evaluation_models(catalog)
    results = {str(csv): compare(csv, args, truth, models, width) for csv in args.results}
    worst = max(max(r["abs_diff_points"].values()) for r in results.values())
    report = {
        "what": "BOP recalls of the same results CSVs: ours (inverse_graphics.metrics.bop_recall) and the "
                "official BOP toolkit's (adi = ADD-S); recalls are fractions, differences percentage points",
        "dataset": str(args.dataset), "split": args.split, "images": len(truth),
        "toolkit": str(args.toolkit), "toolkit_commit": toolkit_commit(args.toolkit, args.toolkit_commit),
        "results": results, "max_abs_diff_points": worst, "within_half_point": bool(worst <= TOLERANCE_POINTS),
        "settings": {"n_top": N_TOP, "visib_gt_min": VISIB_GT_MIN, "max_sym_disc_step": MAX_SYM_DISC_STEP,
                     "thresholds": {k: [float(t) for t in v] for k, v in TOOLKIT_THRESHOLDS.items()},
                     "threshold_units": {"mssd": "x diameter", "adi": "x diameter", "mspd": "px at 640 px wide"},
                     "image_width_px": width, "targets_file": targets_file(args.split),
                     "tolerance_points": TOLERANCE_POINTS},
        "command": shlex.join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
    }
    atomic_write_json(args.out, report)
    print(f"max difference {worst:.3f} points ({'within' if worst <= TOLERANCE_POINTS else 'NOT within'} "
          f"{TOLERANCE_POINTS}); wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
