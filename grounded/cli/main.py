"""``grounded-sam`` command line: ``predict`` (batch segmentation) and ``eval`` (COCO metrics).

Exit status: 0 on success (``predict``: at least one image succeeded, now or in the run being
resumed; bad images are skipped and listed); 1 when no image could be processed or a model failed
to load; 2 for usage errors (bad flags, empty prompt, thresholds outside [0, 1], missing sources,
an output folder of another run); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from grounded.cli.batch import (
    FORMATS,
    BatchOptions,
    OutputConflictError,
    check_output_dir,
    run_batch,
    run_identity,
)
from grounded.config import SAM_PRESETS, load_config, with_detector
from grounded.detectors.prompt import parse_prompt
from grounded.io.sources import SourceError, expand_sources, parse_shard, select_shard, shown

__all__ = ["build_parser", "main"]

logger = logging.getLogger("grounded.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``grounded-sam`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    with _cli_logging(quiet=args.quiet):
        try:
            return args.handler(args, parser)
        except _UsageError as exc:
            print(f"grounded-sam {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted; finished images are kept, re-run the same command to resume",
                  file=sys.stderr)
            return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grounded-sam", description="Text-prompted segmentation: Grounding DINO boxes -> SAM masks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict", help="segment images from files, folders, globs or .txt lists",
        description="Segment every instance of the prompt's classes in each image. Re-running the "
                    "same command resumes; outputs are never overwritten without --overwrite.")
    predict.add_argument("sources", nargs="+", metavar="SOURCES",
                         help="image files, folders (recursive), globs ('**' recursive) or .txt lists "
                              "(one path per line, relative to the list; '#' comments)")
    predict.add_argument("-p", "--prompt", required=True, help='classes, e.g. "cat. dog" or "cat, dog"')
    predict.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    predict.add_argument("--format", default=",".join(FORMATS), type=_formats,
                         help=f"comma-separated subset of {','.join(FORMATS)} (default: all; "
                              "predictions.jsonl is always written: it records finished images)")
    predict.add_argument("--overwrite", action="store_true",
                         help="delete DIR's earlier outputs (run.json, predictions.jsonl, annotations.json, "
                              "masks/, overlays/) and start again")
    predict.add_argument("--shard", type=_shard, metavar="I/N",
                         help="process only shard I of N (0-based, I in 0..N-1); images are assigned by a "
                              "stable hash of their relative path")
    scale = predict.add_argument_group(
        "scale out", "--engine ray spreads the images over Ray workers (pip install 'grounded-sam[ray]'); "
                     "the outputs are the same as with --engine local")
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process (the default); ray: a pool of Ray workers")
    scale.add_argument("--ray-address", metavar="ADDR",
                       help="auto (the cluster this machine joined with `ray start`) or ray://HOST:PORT; "
                            "default: start a local Ray cluster on this machine for the run")
    scale.add_argument("--workers", type=_positive_int, metavar="N",
                       help="Ray workers, each loading the models once (default: one per GPU share, "
                            "or one per 4 CPUs)")
    scale.add_argument("--gpus-per-worker", type=_gpu_share, metavar="F",
                       help="GPUs per Ray worker, e.g. 1, or 0.5 for two workers per GPU (default: 0)")
    scale.add_argument("--batch-size", type=_positive_int, metavar="B",
                       help="images per Ray worker call (default: 4)")
    _add_model_arguments(predict)
    predict.add_argument("--nms-iou", type=_unit_float, help="NMS IoU threshold (1 disables NMS)")
    predict.add_argument("--multimask", action=argparse.BooleanOptionalAction, default=None,
                         help="let SAM choose the best of 3 masks per box")
    predict.set_defaults(handler=_predict)

    evaluate = commands.add_parser(
        "eval", help="box AP, mask AP and box-prompted mIoU on a COCO-format data set",
        description="Prompt every image with the data set's category names and score boxes and masks "
                    "with pycocotools; also prompt SAM with each ground-truth box (mIoU).")
    evaluate.add_argument("--images", required=True, type=Path, help="folder the COCO file_names are in")
    evaluate.add_argument("--annotations", required=True, type=Path, help="COCO instances JSON")
    classes = evaluate.add_mutually_exclusive_group()
    classes.add_argument("--classes-from-categories", action="store_true",
                         help="prompt with every category name (the default)")
    classes.add_argument("--prompt", help="prompt with (and score) only these categories, e.g. 'cat. dog'")
    evaluate.add_argument("--out", type=Path, help="write the JSON report here")
    evaluate.add_argument("--max-images", type=_positive_int, help="evaluate only the first N images")
    evaluate.add_argument("--no-box-prompted", dest="box_prompted", action="store_false",
                          help="skip the box-prompted mIoU protocol")
    _add_model_arguments(evaluate)
    evaluate.set_defaults(handler=_eval)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="default",
                        help="preset (default, fast, hq, sam2, quality, mm-tiny, llmdet-tiny, sam3, "
                             "tiny-random, tiny-random-sam3) "
                             "or YAML file (default: default)")
    parser.add_argument("--sam", choices=sorted(SAM_PRESETS),
                        help="override the config's segmenter with this SAM preset (e.g. vit_t, hq_vit_b)")
    parser.add_argument("--detector", metavar="NAME",
                        help="replace the config's detector: a preset (grounding-dino-tiny, "
                             "grounding-dino-base, mm-grounding-dino-tiny, llmdet-tiny, ...), a Hub id, a "
                             "model folder or an IDEA .pth")
    parser.add_argument("--box-threshold", type=_unit_float, help="detector box threshold in [0, 1]")
    parser.add_argument("--text-threshold", type=_unit_float, help="class phrase threshold in [0, 1]")
    parser.add_argument("--max-detections", type=_positive_int, help="keep at most N instances per image")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the config's, auto)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"),
                        help="model dtype (default: the config's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info messages")


# ------------------------------------------------------------------------------ predict
def _predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    classes = _classes(args.prompt)
    options = BatchOptions(
        classes=classes, formats=args.format, box_threshold=args.box_threshold,
        text_threshold=args.text_threshold, nms_iou=args.nms_iou, max_detections=args.max_detections,
        multimask=args.multimask, overwrite=args.overwrite)
    config = _config(args)
    ray_options = _ray_options(args)
    try:
        check_output_dir(args.out, run_identity(config, options), overwrite=args.overwrite)
        images = expand_sources(args.sources, exclude=[args.out])
    except (OutputConflictError, SourceError) as exc:
        raise _UsageError(str(exc)) from None
    if not images:
        print("grounded-sam predict: error: no images found in SOURCES (folders and globs collect "
              "only image extensions such as .jpg and .png)", file=sys.stderr)
        return EXIT_FAILED
    total = len(images)
    logger.info("found %d image%s", total, "" if total == 1 else "s")
    if args.shard is not None:
        images = select_shard(images, *args.shard)
        logger.info("shard %d/%d: %d of %d images", *args.shard, len(images), total)
        if not images:
            return EXIT_OK
    try:
        if ray_options is not None:
            result = _run_ray(args, config, images, options, ray_options)
        else:
            pipe = _load_pipeline(args)
            if pipe is None:
                return EXIT_FAILED
            result = run_batch(pipe, images, args.out, options, progress=not args.quiet)
    except OutputConflictError as exc:
        raise _UsageError(str(exc)) from None
    except _EngineError as exc:
        print(f"grounded-sam predict: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # the output folder is not writable, the disk is full, ...
        print(f"grounded-sam predict: error: cannot write to {args.out}: {exc}; finished images are "
              "kept, re-run the same command to resume", file=sys.stderr)
        return EXIT_FAILED
    attempted = result.selected - result.already_done
    if result.failed:
        lines = [f"skipped {len(result.failed)} of {attempted} images:"]
        lines += [f"  {shown(name)}: {shown(reason)}" for name, reason in result.failed]
        print("\n".join(lines), file=sys.stderr)
    if result.exit_code != EXIT_OK:
        print(f"grounded-sam predict: error: none of the {attempted} images could be processed",
              file=sys.stderr)
    elif result.failed and result.succeeded == 0:
        logger.info("no new image finished; %d were already done before", result.already_done)
    else:
        logger.info("%d images done (%d instances), %d already done before, %d skipped: %s",
                    result.succeeded, result.instances, result.already_done, len(result.failed), args.out)
    return result.exit_code


_RAY_FLAGS = ("ray_address", "workers", "gpus_per_worker", "batch_size")


def _ray_options(args: argparse.Namespace) -> Any:
    """``RayOptions`` for ``--engine ray`` (Ray must be importable), ``None`` for ``--engine local``."""
    given = [name for name in _RAY_FLAGS if getattr(args, name) is not None]
    if args.engine == "local":
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise _UsageError(f"{flags} only apply to --engine ray")
        return None
    if (args.device or "").startswith("cuda") and not args.gpus_per_worker:
        raise _UsageError(f"--device {args.device} with --engine ray needs --gpus-per-worker (e.g. 1): Ray "
                          "shows GPUs only to workers that reserve them")
    from grounded.cli.ray_engine import RayOptions, RayRunError, import_ray

    try:
        import_ray()
    except RayRunError as exc:
        raise _UsageError(str(exc)) from None
    return RayOptions(address=args.ray_address, workers=args.workers,
                      gpus_per_worker=args.gpus_per_worker or 0.0, batch_size=args.batch_size or 4)


def _run_ray(args: argparse.Namespace, config: Any, images: Any, options: BatchOptions,
             ray_options: Any) -> Any:
    from grounded.cli.ray_engine import PipelineSpec, RayRunError, run_ray

    config_file = Path(args.config)  # a YAML file is read by the workers: give them an absolute path
    spec = PipelineSpec(config=str(config_file.resolve()) if config_file.is_file() else str(args.config),
                        device=args.device, dtype=args.dtype)
    if config.untrained:
        logger.warning("config %r uses untrained random models: outputs are meaningless (tests only)",
                       config.name)
    try:
        return run_ray(spec, images, args.out, options, ray_options,
                       identity=run_identity(config, options), progress=not args.quiet)
    except RayRunError as exc:
        raise _EngineError(f"{exc}; finished images are kept, re-run the same command to resume") from None


# ------------------------------------------------------------------------------ eval
def _eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from grounded.cli.evaluate import load_coco, run_eval

    if args.prompt is not None:
        _classes(args.prompt)
    try:
        count = len(load_coco(args.annotations)["images"])
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if not args.images.is_dir():
        raise _UsageError(f"--images {str(args.images)!r} is not a folder")
    _config(args)
    pipe = _load_pipeline(args)
    if pipe is None:
        return EXIT_FAILED
    kwargs = {k: getattr(args, k) for k in ("box_threshold", "text_threshold", "max_detections")}
    total = min(count, args.max_images or count)
    with tqdm(total=total, unit="img", file=sys.stderr, disable=True if args.quiet else None) as bar:
        try:
            report = run_eval(pipe, images_dir=args.images, annotations=args.annotations, prompt=args.prompt,
                              max_images=args.max_images, box_prompted=args.box_prompted,
                              predict_kwargs=kwargs, on_image=lambda: bar.update(1))
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
        except RuntimeError as exc:
            print(f"grounded-sam eval: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    for name, reason in report.skipped:
        print(f"skipped {shown(name)}: {shown(reason)}", file=sys.stderr)
    if pipe.is_untrained:
        print("note: the model is untrained (tiny-random); these numbers are meaningless", file=sys.stderr)
    print(report.format_table())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        logger.info("report written to %s", args.out)
    return EXIT_OK


# ------------------------------------------------------------------------------ shared helpers
class _UsageError(Exception):
    """Reported as ``grounded-sam CMD: error: ...`` with exit status 2 (no traceback)."""


class _EngineError(Exception):
    """The run could not go on (e.g. the Ray job failed): reported with exit status 1."""


def _classes(prompt: str) -> list[str]:
    try:
        return parse_prompt(prompt)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _config(args: argparse.Namespace) -> Any:
    """The config the pipeline will use (checked before any model is loaded)."""
    try:
        config = load_config(args.config)
        if getattr(args, "sam", None):
            config = dataclasses.replace(config, sam=SAM_PRESETS[args.sam])
        if args.detector is not None:
            config = with_detector(config, args.detector)
        return dataclasses.replace(config, dtype=args.dtype) if args.dtype else config
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _load_pipeline(args: argparse.Namespace) -> Any:
    from grounded.pipeline import GroundedSAM

    try:
        pipe = GroundedSAM.from_config(_config(args), device=args.device)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"grounded-sam {args.command}: error: could not load the models: {exc}", file=sys.stderr)
        return None
    if pipe.is_untrained:
        logger.warning("config %r uses untrained random models: outputs are meaningless (tests only)",
                       pipe.config.name)
    return pipe


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _gpu_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU count such as 1 or 0.5, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _formats(text: str) -> frozenset[str]:
    names = {name.strip().lower() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(FORMATS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {unknown or [text]}; choose from {','.join(FORMATS)}")
    return frozenset(names)


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _LevelPrefix(logging.Formatter):
    """INFO lines as they are; others prefixed with their level (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


@contextmanager
def _cli_logging(*, quiet: bool) -> Iterator[None]:
    """Route the ``grounded`` loggers to stderr for one ``main`` call, then restore them."""
    package = logging.getLogger("grounded")
    handler = logging.StreamHandler(sys.stderr)  # the current stderr; tqdm.write-s it below the bar
    handler.setFormatter(_LevelPrefix())
    saved = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[package]):
            yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
