"""Correcting a result on the page: add, delete, relabel, refine, pick a candidate mask, undo, redo.

Every operation takes a :class:`Session` and returns a new one (sessions are never mutated); masks
are decoded by SAM from the cached image embedding (``GroundedSAM.segment_prompt``), so no
detector or image encoder runs. Each edit is recorded in ``grounded.web.edits`` terms and pushed on
the undo stack (at most :data:`HISTORY` steps). Coordinates are absolute pixels of the original
image. Bad input raises ``ValueError`` saying what to do.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import numpy as np

from grounded.masks import compact_masks
from grounded.web.edits import Click, Edits, Instance, apply_edits, instance_of
from grounded.web.sessions import Candidates, Session

__all__ = [
    "HISTORY", "add_box", "add_click", "add_point", "apply_click", "box_corner", "choose_candidate",
    "delete_instance", "redo", "reapply", "relabel_instance", "reset_instance", "undo",
]

HISTORY = 50  # undo steps kept per session (they share masks; bounded again by the session store)


def reapply(session: Session, predicted: Any, options: Any, *, dropped_empty: int = 0) -> Session:
    """The session with a new prediction (new thresholds), every edit re-applied to it."""
    detections, keys = apply_edits(predicted, session.classes, session.edits)
    return dataclasses.replace(session, options=options, predicted=predicted, detections=detections,
                               keys=keys, candidates=None, corner=None, dropped_empty=dropped_empty)


def _commit(session: Session, edits: Edits, *, candidates: Candidates | None = None) -> Session:
    detections, keys = apply_edits(session.predicted, session.classes, edits)
    return dataclasses.replace(session, edits=edits, detections=detections, keys=keys,
                               undo=(*session.undo, session.edits)[-HISTORY:], redo=(),
                               candidates=candidates, corner=None)


def undo(session: Session) -> Session:
    if not session.undo:
        raise ValueError("nothing to undo")
    detections, keys = apply_edits(session.predicted, session.classes, session.undo[-1])
    return dataclasses.replace(session, edits=session.undo[-1], detections=detections, keys=keys,
                               undo=session.undo[:-1], redo=(session.edits, *session.redo),
                               candidates=None, corner=None)


def redo(session: Session) -> Session:
    if not session.redo:
        raise ValueError("nothing to redo")
    detections, keys = apply_edits(session.predicted, session.classes, session.redo[0])
    return dataclasses.replace(session, edits=session.redo[0], detections=detections, keys=keys,
                               undo=(*session.undo, session.edits)[-HISTORY:], redo=session.redo[1:],
                               candidates=None, corner=None)


# ------------------------------------------------------------------------------- checks
def check_index(session: Session, index: Any, action: str = "refine") -> int:
    count = len(session.detections)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise ValueError(f"pick an instance to {action} (0..{count - 1}); got {index!r}" if count
                         else f"there is no instance to {action}: run a prompt that finds something first")
    return int(index)


def _class_id(session: Session, class_name: Any) -> int:
    if not isinstance(class_name, str) or class_name not in session.classes:
        raise ValueError(f"choose a class from the prompt's list {list(session.classes)}; got {class_name!r}"
                         " (add a class by adding it to the prompt and running again)")
    return session.classes.index(class_name)


def _check_point(session: Session, x: Any, y: Any) -> tuple[float, float]:
    height, width = session.image_size
    if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in (x, y)):
        raise ValueError(f"a point needs numbers x and y, got {x!r}, {y!r}")
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"click ({x:.0f}, {y:.0f}) is outside the {width} x {height} image")
    return float(x), float(y)


def _current(session: Session, row: int) -> tuple[str, Instance]:
    key = session.keys[row]
    if key in session.edits.overrides:
        return key, session.edits.overrides[key]
    return key, instance_of(session.detections, row)


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _one_mask(session: Session, mask: np.ndarray) -> Any:
    if not mask.any():
        raise ValueError("SAM found no object there (the mask is empty): try another point or a larger box")
    return compact_masks([mask], session.image_size)


# --------------------------------------------------------------------------- operations
def add_box(provider: Any, session: Session, box: Any, class_name: str) -> Session:
    """Add a missed object from a box (x0, y0, x1, y1; corners in any order) with a prompt class."""
    class_id = _class_id(session, class_name)
    (x0, y0), (x1, y1) = _check_point(session, box[0], box[1]), _check_point(session, box[2], box[3])
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"the box is {x1 - x0:.0f} x {y1 - y0:.0f} px; draw one at least 2 px wide and high")
    masks, scores = provider.get(session.preset).segment_prompt(session.image, box_xyxy=[x0, y0, x1, y1])
    instance = Instance((x0, y0, x1, y1), class_id, 1.0, _one_mask(session, masks[0]), float(scores[0]),
                        added=True)
    return _commit(session, session.edits.with_instance(f"user:{secrets.token_hex(6)}", instance))


def add_point(provider: Any, session: Session, x: float, y: float, class_name: str) -> Session:
    """Add a missed object from one click: SAM's best of 3 candidates; the others stay choosable."""
    class_id = _class_id(session, class_name)
    x, y = _check_point(session, x, y)
    masks, scores = provider.get(session.preset).segment_prompt(session.image, points_xy=[[x, y]],
                                                                 point_labels=[1], multimask=True)
    keep = [i for i in range(len(masks)) if masks[i].any()]
    if not keep:
        raise ValueError("SAM found no object at this point: try another point or draw a box")
    masks, scores = masks[keep], scores[keep]
    key = f"user:{secrets.token_hex(6)}"
    instance = Instance(_tight_box(masks[0]), class_id, 1.0, compact_masks([masks[0]], session.image_size),
                        float(scores[0]), clicks=(Click(x, y, True),), added=True)
    candidates = Candidates(key, compact_masks(masks, session.image_size), tuple(float(s) for s in scores))
    return _commit(session, session.edits.with_instance(key, instance), candidates=candidates)


def choose_candidate(session: Session, choice: Any) -> Session:
    """Use SAM's candidate ``choice`` (0 = best) for the instance just added from a click or refined
    with its first click. An added object's box becomes the chosen mask's; a detected one keeps the
    detector's box (its prompt for further clicks)."""
    offer = session.candidates
    if offer is None or offer.key not in session.edits.overrides:
        raise ValueError("no candidate masks to choose from: add an object with a single click, or "
                         "click once on an instance to refine it, first")
    count = len(offer.scores)
    if isinstance(choice, bool) or not isinstance(choice, (int, np.integer)) or not 0 <= choice < count:
        raise ValueError(f"choose candidate 1..{len(offer.scores)}; got {choice!r}")
    mask = offer.masks[[int(choice)]]
    old = session.edits.overrides[offer.key]
    xyxy = _tight_box(mask.to_dense()[0]) if old.added else old.xyxy
    instance = dataclasses.replace(old, mask=mask, mask_score=offer.scores[choice], xyxy=xyxy)
    return _commit(session, session.edits.with_instance(offer.key, instance),
                   candidates=dataclasses.replace(offer, chosen=int(choice)))


def box_corner(provider: Any, session: Session, x: float, y: float, class_name: str) -> Session:
    """A click while drawing a box: the first sets a corner, the second adds the box's object."""
    x, y = _check_point(session, x, y)
    if session.corner is None:
        _class_id(session, class_name)  # refuse early, before the second click
        return dataclasses.replace(session, corner=(x, y))
    return add_box(provider, session, (*session.corner, x, y), class_name)


def delete_instance(session: Session, index: Any) -> Session:
    row = check_index(session, index, "delete")
    return _commit(session, session.edits.without(session.keys[row], delete=True))


def relabel_instance(session: Session, index: Any, class_name: str) -> Session:
    row = check_index(session, index, "relabel")
    class_id = _class_id(session, class_name)
    key, instance = _current(session, row)
    if instance.class_id == class_id:
        raise ValueError(f"instance #{row} already is {class_name!r}")
    relabeled = dataclasses.replace(instance, class_id=class_id)
    return _commit(session, session.edits.with_instance(key, relabeled))


def add_click(provider: Any, session: Session, *, index: Any, x: float, y: float, positive: bool) -> Session:
    """Add a click to instance ``index``'s SAM prompt (its box + all its clicks) and re-decode its mask.

    The mask applied is SAM's single-mask output for that prompt. On an instance's first click (one
    point is ambiguous: part or whole?) SAM's 3 multimask candidates for the same prompt are offered
    too (``Session.candidates``, none chosen yet; ``choose_candidate`` applies one)."""
    row = check_index(session, index)
    x, y = _check_point(session, x, y)
    key, instance = _current(session, row)
    clicks = (*instance.clicks, Click(x, y, bool(positive)))
    prompt = {"points_xy": [[c.x, c.y] for c in clicks], "point_labels": [int(c.positive) for c in clicks],
              "box_xyxy": instance.xyxy}
    pipeline = provider.get(session.preset)
    masks, scores = pipeline.segment_prompt(session.image, **prompt)
    mask = compact_masks([masks[0]], session.image_size)  # an empty mask is allowed: shown as such
    refined = dataclasses.replace(instance, mask=mask, mask_score=float(scores[0]), clicks=clicks)
    candidates = None
    if len(clicks) == 1:
        options, option_scores = pipeline.segment_prompt(session.image, **prompt, multimask=True)
        keep = [i for i in range(len(options)) if options[i].any()]
        if keep:
            candidates = Candidates(key, compact_masks(options[keep], session.image_size),
                                    tuple(float(s) for s in option_scores[keep]), chosen=None)
    return _commit(session, session.edits.with_instance(key, refined), candidates=candidates)


def reset_instance(session: Session, index: Any) -> Session:
    """Undo every change to predicted instance ``index`` (clicks, class); the edit can itself be undone."""
    row = check_index(session, index, "reset")
    key = session.keys[row]
    if key.startswith("user:"):
        raise ValueError(f"instance #{row} was added by hand: delete it or undo instead")
    if key not in session.edits.overrides:
        raise ValueError(f"instance #{row} has no changes to reset")
    return _commit(session, session.edits.without(key, delete=False))


def apply_click(provider: Any, session: Session, tool: int, *, index: Any, x: float, y: float,
                class_name: str | None) -> tuple[Session, str, int | None]:
    """A click on the overlay at (x, y) with the page's tool ``tool`` (0: refine +, 1: refine −, 2: add
    an object from a point, 3: a corner of a box to add): the new session, a status note (plain text)
    and the instance to select (a new one is appended, so its row is the old count)."""
    name = class_name or (session.classes[0] if session.classes else None)
    added = len(session.detections)
    if tool == 2:
        return add_point(provider, session, x, y, name), f"added a {name} from a click", added
    if tool == 3:
        if session.corner is None:
            return box_corner(provider, session, x, y, name), "box: now click its opposite corner", index
        return box_corner(provider, session, x, y, name), f"added a {name} from a box", added
    if tool not in (0, 1):
        raise ValueError(f"unknown click tool {tool!r}")
    refined = add_click(provider, session, index=index, x=x, y=y, positive=tool == 0)
    offered = " (or pick one of SAM's candidates)" if refined.candidates is not None else ""
    return refined, f"instance #{index} refined{offered}", index
