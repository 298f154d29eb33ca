"""Gradio front end for grounded-sam: wiring only; the logic lives in ``grounded.web.service``.

Run ``python app.py [--config default|quality|tiny-random|PATH] [--host H] [--port P] [--share]``
(environment: ``GSAM_CONFIG``, ``GSAM_HOST``/``GRADIO_SERVER_NAME``, ``GSAM_PORT``/``GRADIO_SERVER_PORT``,
``GSAM_SHARE``, ``GSAM_DEVICE``, ``GSAM_QUEUE_SIZE``, ``GSAM_CONCURRENCY``, ``GSAM_MAX_FILE_SIZE`` in MB,
``GSAM_MAX_SESSIONS``).
Public API (``gradio_client``): ``/segment`` -> overlay image + the shared JSON schema.
"""

from __future__ import annotations

import html
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from grounded.config import load_config, with_detector
from grounded.detectors.base import ExemplarBoxes
from grounded.io.annotate import annotate
from grounded.pipeline import GroundedSAM
from grounded.web import service
from grounded.web.examples import write_examples
from grounded.web.exemplars import parse_exemplars
from grounded.web.gradio_errors import errors_for_api, errors_for_users
from grounded.web.gradio_patches import (
    API_DEFAULTS,
    explain_input_errors,
    fill_missing_api_inputs,
    fix_temp_file_sweep,
    limit_stored_input_values,
    limit_url_downloads,
)
from grounded.web.limits import BodyLimitMiddleware, body_limit_for
from grounded.web.page import (
    CSS,
    HEAD,
    INTRO,
    SHORTCUTS_MARKDOWN,
    TOOLS,
    UNTRAINED_WARNING,
    counter_js,
    preset_info,
)
from grounded.web.server_args import parse_args
from grounded.web.service import PipelineProvider, SegmentOptions
from grounded.web.sessions import Session, SessionStore
from grounded.web.spaces import gpu

__all__ = ["build_demo", "launch_demo", "main", "parse_args", "write_examples"]

MB = 1_000_000


def build_demo(
    pipelines: GroundedSAM | PipelineProvider | Callable[[], GroundedSAM],
    *,
    examples: bool = True,
    queue_size: int = 16,
    concurrency: int = 1,
    max_file_size: int = 25 * MB,
    session_ttl_s: int = 1800,
    session_bytes: int = 1024 * MB,
    request_bytes: int = 2048 * MB,
) -> gr.Blocks:
    """The Gradio page and its ``/segment`` API endpoint.

    Args:
        pipelines: one pipeline, a lazily loading ``PipelineProvider`` (the served config plus every
            real preset), or a zero-argument factory (loaded on first use).
        examples: show the scikit-image example photos.
        queue_size: requests waiting beyond this are refused ("queue full").
        concurrency: model events running at once (the pipeline also locks each model).
        max_file_size: bytes; also applied to base64 and URL images (pass the same to ``launch_demo``).
        session_ttl_s: a tab's state (image, masks) is dropped after this long unused.
        session_bytes: all tabs' state together (images and compact masks) stays within this; the
            least recently used tabs are dropped first.
        request_bytes: a request whose projected peak memory (``grounded.web.budget``) is larger is
            refused before any model runs.
    """
    provider = PipelineProvider.of(pipelines)
    sessions = SessionStore(session_bytes, ttl_s=session_ttl_s)
    upload_dir = get_upload_folder()  # gradio's cache: uploads land here, outputs written here are tracked
    os.makedirs(upload_dir, exist_ok=True)
    known = provider.config(provider.default)
    fix_temp_file_sweep()
    limit_stored_input_values()
    fill_missing_api_inputs()
    explain_input_errors()
    limit_url_downloads(max_file_size)
    defaults = SegmentOptions.from_config(known or provider.get().config)

    def options(box: float, text: float, nms: float, max_det: float, multimask: bool) -> SegmentOptions:
        return SegmentOptions(box, text, nms, max_det, multimask)  # validated strictly there

    def new_session(image: Any, prompt: str, preset: str, opts: SegmentOptions,
                    exemplars: ExemplarBoxes | None = None) -> Session:
        source = service.resolve_image(image, upload_dir=upload_dir, max_bytes=max_file_size)
        name = service.image_name_of(image)
        return service.segment(provider, source, prompt, preset=preset, options=opts, image_name=name,
                               request_bytes=request_bytes, exemplars=exemplars)

    def render(session: Session, started: float, *, token: str | None = None, note: str = "",
               selected: Any = None, new: bool = False) -> tuple[Any, ...]:
        token = sessions.put(session, token)  # the tab's state is this token; the store holds the rest
        value, colors = service.annotated_value(session)
        count = len(session.detections)
        status = f"**{count}** instance{'s' * (count != 1)} · {1000 * (time.perf_counter() - started):.0f} ms"
        if note:
            status += f" · {note}"
        if session.dropped_empty:
            status += f" · {session.dropped_empty} empty (zero-area) left out"
        if session.edits:
            status += " · edited"
        if session.untrained:
            status = f"⚠️ untrained model, meaningless output · {status}"
        if session.models:
            status += f"  \n{service.models_note(session)}"
        choices = service.instance_choices(session.detections)
        keep = isinstance(selected, int) and 0 <= selected < len(choices)
        pick = selected if keep else (choices[0][1] if choices else None)
        offer = session.candidates
        scores = offer.scores if offer else ()
        candidate_choices = [f"{i + 1} (IoU {score:.2f})" for i, score in enumerate(scores)]
        chosen = candidate_choices[offer.chosen] if offer and offer.chosen is not None else None
        classes = list(session.classes)
        return (
            token,
            status,
            gr.AnnotatedImage(value=value, color_map=colors),
            service.overlay_preview(session, pick),
            service.table_rows(session.detections),
            gr.Button(interactive=True),  # "Prepare download": the zip is built only when asked for
            gr.DownloadButton(value=None, interactive=False),  # an older zip no longer matches
            service.result_json(session),
            gr.Dropdown(choices=choices, value=pick),
            gr.Dropdown(choices=classes, value=classes[0]) if new else gr.skip(),  # keep the user's class
            gr.Radio(choices=candidate_choices, value=chosen,
                     visible=bool(offer)),
            gr.Button(interactive=bool(session.undo)),
            gr.Button(interactive=bool(session.redo)),
        )

    def stored(token: str | None, what: str) -> Session:
        if token is None:
            raise ValueError(what)
        return sessions.get(token)

    @errors_for_users
    def bundle(token: str | None) -> Any:
        session = stored(token, "run a prompt first: there is nothing to download yet")
        folder = Path(tempfile.mkdtemp(prefix="gsam-", dir=upload_dir))
        path = service.write_bundle(session, service.full_overlay(session), folder)
        return gr.DownloadButton(value=str(path), interactive=True)

    @errors_for_users
    def check_upload(image: Any) -> tuple[Any, str]:
        if image is None:
            return gr.skip(), ""
        try:
            width, height = service.check_upload(image, upload_dir=upload_dir, max_bytes=max_file_size,
                                                 max_pixels=(known.max_pixels if known else 40_000_000))
        except ValueError as exc:
            return None, f"⚠️ upload refused: {html.escape(str(exc), quote=False)}"
        return gr.skip(), f"image {width}×{height} ready: type a prompt and press Run"

    @errors_for_users
    @gpu
    def run(image: Any, prompt: str, box_threshold: float, text_threshold: float, nms_iou: float,
            preset: str, max_detections: float, multimask: bool, state_token: str | None) -> tuple[Any, ...]:
        started = time.perf_counter()
        opts = options(box_threshold, text_threshold, nms_iou, max_detections, multimask)
        rendered = render(new_session(image, prompt, preset, opts), started, token=state_token, new=True,
                          note=service.discarded_note(sessions, state_token))
        return (*rendered, gr.Dropdown(choices=provider.choices()))  # the picker shows what is loaded now

    @errors_for_users
    @gpu
    def refilter(token: str | None, box_threshold: float, text_threshold: float, nms_iou: float,
                 max_detections: float, multimask: bool, selected: int | None) -> tuple[Any, ...]:
        if token is None:  # nothing run yet: sliders only set the next run's values
            return tuple(gr.skip() for _ in outputs)
        started = time.perf_counter()
        opts = options(box_threshold, text_threshold, nms_iou, max_detections, multimask)
        session = sessions.get(token)
        if session.options == opts:  # e.g. a slider moved and back: nothing to redo
            return tuple(gr.skip() for _ in outputs)
        session = service.refilter(provider, session, opts)
        note = "re-filtered from cache" + (", edits kept" if session.edits else "")
        return render(session, started, token=token, note=note, selected=selected)

    def loading(preset_name: str) -> str:
        if provider.is_loaded(preset_name):
            return f"switching to preset **{html.escape(preset_name)}**…"
        return f"⏳ loading preset **{html.escape(preset_name)}** (first use: its weights are read now)…"

    @errors_for_users
    @gpu
    def switch_preset(preset_name: str, image: Any, prompt: str, box_threshold: float, text_threshold: float,
                      nms_iou: float, max_detections: float, multimask: bool,
                      token: str | None) -> tuple[Any, ...]:
        started = time.perf_counter()
        try:
            pipeline = provider.get(preset_name)
        except service.PresetUnavailableError:
            fallback = sessions.get(token).preset if token is not None else provider.default
            status = f"⚠️ preset {html.escape(preset_name)} is {html.escape(provider.state(preset_name))}"
            return (gr.Dropdown(choices=provider.choices(), value=fallback), status,
                    *(gr.skip() for _ in outputs[1:]))
        picker = gr.Dropdown(choices=provider.choices(), value=preset_name)
        if token is None or image is None or not (prompt or "").strip():
            note = f"preset {html.escape(preset_name)} loaded: {service.precision_note(pipeline.describe())}"
            return (picker, note, *(gr.skip() for _ in outputs[1:]))
        opts = options(box_threshold, text_threshold, nms_iou, max_detections, multimask)
        discarded = service.discarded_note(sessions, token, " · ")
        note = f"re-run with preset {html.escape(preset_name)}{discarded}"
        rendered = render(new_session(image, prompt, preset_name, opts), started, token=token, note=note,
                          new=True)
        return (picker, *rendered[1:])

    def edit(action: Callable[[Session], Session], token: str | None, note: str | Callable[[Session], str],
             selected: Any = None) -> tuple[Any, ...]:
        session = stored(token, "run a prompt first, then correct its result")
        started = time.perf_counter()
        session = action(session)
        note = note(session) if callable(note) else note
        return render(session, started, token=token, note=note, selected=selected)

    def steps(session: Session) -> str:
        return f"{len(session.undo)} to undo, {len(session.redo)} to redo"

    @errors_for_users
    @gpu
    def click(token: str | None, index: int | None, tool: str, class_name: str | None,
              evt: gr.SelectData) -> tuple[Any, ...]:
        session = stored(token, "run a prompt first, then click on the overlay to correct it")
        scale = service.preview_scale(session.image_size)  # the overlay is shown at preview size
        x, y = (v / scale for v in evt.index)
        started = time.perf_counter()
        session, note, selected = service.apply_click(provider, session, TOOLS.index(tool), index=index, x=x,
                                                      y=y, class_name=class_name)
        return render(session, started, token=token, note=html.escape(note, quote=False), selected=selected)

    @errors_for_users
    def delete(token: str | None, index: int | None) -> tuple[Any, ...]:
        return edit(lambda s: service.delete_instance(s, index), token, f"instance #{index} deleted",
                    selected=index)

    @errors_for_users
    def relabel(token: str | None, index: int | None, class_name: str | None) -> tuple[Any, ...]:
        return edit(lambda s: service.relabel_instance(s, index, class_name), token,
                    f"instance #{index} is now {html.escape(str(class_name))}", selected=index)

    @errors_for_users
    def reset(token: str | None, index: int | None) -> tuple[Any, ...]:
        return edit(lambda s: service.reset_instance(s, index), token, f"instance #{index} reset",
                    selected=index)

    @errors_for_users
    def undo(token: str | None, index: int | None) -> tuple[Any, ...]:
        return edit(service.undo, token, lambda s: f"undone ({steps(s)})", selected=index)

    @errors_for_users
    def redo(token: str | None, index: int | None) -> tuple[Any, ...]:
        return edit(service.redo, token, lambda s: f"redone ({steps(s)})", selected=index)

    @errors_for_users
    def candidate(token: str | None, index: int | None, choice: str | None) -> tuple[Any, ...]:
        if not choice:
            return tuple(gr.skip() for _ in outputs)
        number = int(choice.split()[0])
        return edit(lambda s: service.choose_candidate(s, number - 1), token, f"candidate mask {number} used",
                    selected=index)

    @errors_for_users
    def highlight(token: str | None, index: int | None) -> Any:
        if token is None:
            return gr.skip()
        return service.overlay_preview(sessions.get(token), index)

    @errors_for_users
    def pick_from_view(token: str | None, evt: gr.SelectData) -> tuple[Any, Any]:
        index = int(evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index)
        overlay = service.overlay_preview(sessions.get(token), index) if token is not None else gr.skip()
        return index, overlay

    @errors_for_api
    @gpu
    def segment_api(image: Any, prompt: str, box_threshold: float, text_threshold: float, nms_iou: float,
                    preset: str, max_detections: float, multimask: bool,
                    exemplar_boxes: Any = None) -> tuple[Any, dict[str, Any]]:
        """Segment every instance of the prompt's classes: returns the overlay image and the JSON result
        ({"image": {"width", "height"}, "classes", "detections": [{"label", "class_id", "score", "mask_score",
        "box_xyxy", "area", "mask": COCO RLE}], "untrained", "model", "edited"}). Optional exemplar_boxes
        (SAM 3 presets): {"positive": [[x0, y0, x1, y1], ...], "negative": [...]} in pixels of the image."""
        opts = options(box_threshold, text_threshold, nms_iou, max_detections, multimask)
        exemplars = parse_exemplars(exemplar_boxes)
        session = new_session(image, prompt, preset, opts, exemplars)  # not stored: an API call is stateless
        return annotate(session.image, session.detections), service.result_json(session)

    # Raw HTTP callers may send only [image, prompt]: the rest default to the page's defaults.
    setattr(segment_api, API_DEFAULTS, [None, "", defaults.box_threshold, defaults.text_threshold,
                                        defaults.nms_iou, provider.default, defaults.max_detections,
                                        defaults.multimask, None])
    untrained = known is not None and known.untrained
    several = len(provider.names) > 1
    with gr.Blocks(title="Grounded SAM", delete_cache=(600, 3600), analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(UNTRAINED_WARNING, visible=untrained, elem_id="untrained-warning")
        state = gr.State(None, time_to_live=session_ttl_s)
        with gr.Row(elem_id="main-row"):
            with gr.Column(scale=2, min_width=320, elem_id="inputs-col"):
                example_slot = gr.Column(elem_id="examples-col")
                # type="filepath" + image_mode=None: gradio never decodes pixels; load_image does,
                # after its header pixel check (the events below take the raw payload: preprocess=False).
                image = gr.Image(label="Image", type="filepath", image_mode=None, elem_id="input-image",
                                 sources=["upload", "clipboard", "webcam"], height=320)
                prompt = gr.Textbox(label="Prompt", placeholder="dog. frisbee. person",
                                    max_length=service.MAX_PROMPT_CHARS, elem_id="prompt", max_lines=6,
                                    info="Class names separated by '.', ',', ';' or new lines; Enter runs.")
                gr.HTML(f"0 / {service.MAX_PROMPT_CHARS} characters", elem_id="prompt-counter")
                run_button = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=3, min_width=320, elem_id="results-col"):
                status = gr.Markdown(elem_id="status")
                overlay = gr.Image(label="Overlay: click to refine or add (see the tool below)",
                                   interactive=False, format="webp", elem_id="overlay", height=420)
                with gr.Row(elem_id="edit-row"):
                    instance = gr.Dropdown([], label="Instance", elem_id="instance", min_width=160)
                    tool = gr.Radio(TOOLS, value=TOOLS[0], label="A click on the overlay", elem_id="tool",
                                    min_width=240)
                    edit_class = gr.Dropdown([], label="Class (add / relabel)", elem_id="edit-class",
                                             min_width=140)
                candidates = gr.Radio([], label="SAM's candidate masks for the clicked object", visible=False,
                                      elem_id="candidates")
                with gr.Row(elem_id="edit-buttons"):
                    relabel_button = gr.Button("Set class", size="sm", elem_id="relabel")
                    delete_button = gr.Button("Delete", size="sm", elem_id="delete", variant="stop")
                    reset_button = gr.Button("Reset instance", size="sm", elem_id="reset")
                    undo_button = gr.Button("↶ Undo", size="sm", elem_id="undo", interactive=False)
                    redo_button = gr.Button("↷ Redo", size="sm", elem_id="redo", interactive=False)
                gr.Markdown(SHORTCUTS_MARKDOWN, elem_id="shortcuts")
                annotated = gr.AnnotatedImage(elem_id="instances", height=460,
                                              label="Instances (numbered as in the table; click to select)")
                table = gr.Dataframe(headers=service.TABLE_HEADERS, label="Detections", interactive=False,
                                     datatype=["number", "str", "number", "number", "str", "number"],
                                     elem_id="detections", wrap=False)
                with gr.Row():
                    prepare = gr.Button("Prepare download (.zip): COCO JSON, mask PNGs, overlay",
                                        interactive=False, elem_id="prepare-download", size="sm")
                    download = gr.DownloadButton("Download .zip", interactive=False, elem_id="download",
                                                 size="sm")
                with gr.Accordion("JSON result", open=False):
                    result = gr.JSON(label="Result")
            with gr.Column(scale=2, min_width=320, elem_id="controls-col"):
                preset = gr.Dropdown(provider.choices(), value=provider.default, label="Models (preset)",
                                     interactive=several, elem_id="preset",
                                     info=preset_info(provider.names, untrained))
                box = gr.Slider(0, 1, value=defaults.box_threshold, step=0.01, label="Box threshold",
                                elem_id="box-threshold")
                text = gr.Slider(0, 1, value=defaults.text_threshold, step=0.01, label="Text threshold",
                                 elem_id="text-threshold")
                nms = gr.Slider(0, 1, value=defaults.nms_iou, step=0.01, label="NMS IoU (1 = off)",
                                elem_id="nms-iou")
                with gr.Accordion("Advanced", open=False):
                    max_det = gr.Slider(1, service.MAX_DETECTIONS_LIMIT, value=defaults.max_detections,
                                        step=1, label="Max detections", elem_id="max-detections")
                    multimask = gr.Checkbox(value=defaults.multimask, elem_id="multimask",
                                            label="Multimask (best of 3 SAM masks)")
        if examples:
            with example_slot:
                pairs = write_examples(Path(tempfile.gettempdir()) / "grounded-sam-examples")
                gr.Examples(pairs, inputs=[image, prompt], cache_examples=False, api_visibility="private",
                            label="Examples (click one, then Run)", elem_id="examples",
                            example_labels=[f"{Path(path).stem}: {words}" for path, words in pairs])
        # API-only endpoint: hidden trigger and outputs, so /segment returns exactly (overlay, JSON).
        api_trigger = gr.Button(visible=False)
        api_overlay = gr.Image(label="overlay", format="png", visible=False)
        api_result = gr.JSON(label="result", visible=False)
        api_exemplars = gr.JSON(None, label="exemplar_boxes", visible=False)

        outputs = [state, status, annotated, overlay, table, prepare, download, result, instance, edit_class,
                   candidates, undo_button, redo_button]
        model_event = {"concurrency_id": "pipeline", "concurrency_limit": concurrency}
        private = {"api_visibility": "private"}
        run_inputs = [image, prompt, box, text, nms, preset, max_det, multimask]
        image.upload(check_upload, [image], [image, status], preprocess=False, **private)
        prompt.change(None, [prompt], None, js=counter_js(service.MAX_PROMPT_CHARS), queue=False, **private)
        for trigger in (run_button.click, prompt.submit):
            trigger(run, [*run_inputs, state], [*outputs, preset], preprocess=False, **private, **model_event)
        # .change, not .input: the sliders' reset (↺) buttons and keyboard steps re-filter too.
        for control in (box, text, nms, max_det, multimask):
            control.change(refilter, [state, box, text, nms, max_det, multimask, instance], outputs,
                           trigger_mode="always_last", show_progress="hidden", **private, **model_event)
        preset.input(loading, [preset], [status], queue=False, **private).then(
            switch_preset, [preset, image, prompt, box, text, nms, max_det, multimask, state],
            [preset, *outputs[1:]], preprocess=False, **private, **model_event)
        overlay.select(click, [state, instance, tool, edit_class], outputs, **private, **model_event)
        delete_button.click(delete, [state, instance], outputs, **private, **model_event)
        relabel_button.click(relabel, [state, instance, edit_class], outputs, **private, **model_event)
        reset_button.click(reset, [state, instance], outputs, **private, **model_event)
        undo_button.click(undo, [state, instance], outputs, **private, **model_event)
        redo_button.click(redo, [state, instance], outputs, **private, **model_event)
        candidates.input(candidate, [state, instance, candidates], outputs, **private, **model_event)
        instance.input(highlight, [state, instance], [overlay], **private, **model_event)
        annotated.select(pick_from_view, [state], [instance, overlay], **private, **model_event)
        table.select(pick_from_view, [state], [instance, overlay], **private, **model_event)
        prepare.click(bundle, [state], [download], **private)
        api_trigger.click(segment_api, [*run_inputs, api_exemplars], [api_overlay, api_result],
                          api_name="segment",
                          preprocess=False, **model_event)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo


def launch_demo(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
                max_file_size: int = 25 * MB, max_sessions: int = 256,
                prevent_thread_lock: bool = False) -> Any:
    """Launch with the service's safety settings: no tracebacks to clients, upload size limit and the
    same limit on every request body (HTTP 413 before the body is read: ``grounded.web.limits``), no
    extra file routes (no ``allowed_paths``), and at most ``max_sessions`` sessions' state kept
    (gradio keeps each session's component values; the least recently used are dropped)."""
    body_limit = Middleware(BodyLimitMiddleware, max_bytes=body_limit_for(max_file_size))
    return demo.launch(css=CSS, head=HEAD, server_name=host, server_port=port, share=share, show_error=False,
                       max_file_size=max_file_size, prevent_thread_lock=prevent_thread_lock,
                       state_session_capacity=max_sessions, footer_links=["api"], quiet=prevent_thread_lock,
                       app_kwargs={"middleware": [body_limit]})


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    args = parse_args(argv)
    overrides: dict[str, Any] = {"device": args.device} if args.device else {}
    # A server keeps its memory within budget: glibc returns freed activation memory, unless asked
    # to keep it for speed (sam_core.allocator: the process then holds on to its peak heap).
    overrides["tune_allocator"] = args.tune_allocator
    try:
        config = with_detector(load_config(args.config), args.detector) if args.detector else args.config
        provider = PipelineProvider.from_config(config, **overrides)
        provider.get()  # load the default preset now: missing weights fail here, clearly, not on first use
    except (ValueError, RuntimeError, OSError) as exc:
        detail = exc.__cause__ if isinstance(exc, service.PresetUnavailableError) else exc
        sys.exit(f"grounded-sam app: cannot load config {args.config!r}: {detail}\n"
                 "Put the weights in the Hugging Face cache (or pass a local folder in a YAML config), "
                 "or try the app offline with --config tiny-random (untrained, meaningless output).")
    max_file_size = int(args.max_file_size_mb * MB)
    demo = build_demo(provider, queue_size=args.queue_size, concurrency=args.concurrency,
                      max_file_size=max_file_size, session_bytes=int(args.session_memory_mb * MB),
                      request_bytes=int(args.request_memory_mb * MB))
    launch_demo(demo, host=args.host, port=args.port, share=args.share, max_file_size=max_file_size,
                max_sessions=args.max_sessions)


if __name__ == "__main__":
    main()
