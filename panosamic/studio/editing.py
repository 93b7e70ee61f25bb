"""The light events of a session: SAM's prompt decoder on the cached embeddings (tens of
milliseconds on a CPU), masks at the working size, one undo step per change. No encoder runs
here; `StudioBackend` (backend.py) takes them as a base class."""

from __future__ import annotations

import time
from typing import Any, Optional

from ..errors import InputError
from .prompts import lonlat_to_pixels, parse_prompt
from .session import Session
from .validation import finite_degrees, whole_number


class EditEvents:
    """Clicks, prompts, candidate choice, assign, undo and clear on one user's `Session`.

    Expects of the class it is mixed into: `store` (the `SessionStore`: `use(s)` marks the
    session busy and checks it is still open) and `registry` (the loaded `Predictor`s by model
    key)."""

    def predict(self, s: Session) -> None:
        """Runs SAM's decoder on the session's prompts (cached embeddings only), masks at the
        working size."""
        if not s.has_prompts:
            s.drop_candidates()
            return
        predictor = self.registry.get(s.model_key)
        t0 = time.perf_counter()
        masks, scores, _ = predictor.predict(**s.prompt_kwargs(), multimask_output=True,
                                             output_size=s.shape, state=s.state)
        s.record_time("last_prompt", time.perf_counter() - t0)
        s.set_candidates(masks, scores)

    def _predict_or_undo(self, s: Session) -> None:
        # a prompt the decoder cannot take must not stay behind in the session
        try:
            self.predict(s)
        except Exception:
            s.undo()
            raise

    def click(self, s: Session, x_display: float, y_display: float, kind: str = "positive",
              add: bool = False) -> None:
        """A click on the ERP view at display (= working) pixels: a positive point, a negative
        point or a box corner (kind "box"; the decoder runs once the second corner completes
        it). As in SAM's demo, a positive point or a box starts a new selection, and with `add`
        (Shift held) joins the current one; a negative point takes a part away from the
        current selection (see `_add_click`)."""
        with self.store.use(s):
            h, w = s.input_size
            x = min(max((float(x_display) + 0.5) / s.scale, 0.0), w - 1.0)
            y = min(max((float(y_display) + 0.5) / s.scale, 0.0), h - 1.0)
            self._add_click(s, x, y, kind, add)

    def click_lonlat(self, s: Session, lon: Any, lat: Any, kind: str = "positive", add: bool = False) -> None:
        """A click in the 360° viewer: the direction (lon, lat) in degrees, `panosamic.geometry`'s
        conventions, becomes the input pixel of that direction; then exactly as `click`
        (a box by two corners, the second left of the first wraps across the seam)."""
        with self.store.use(s):
            x, y = lonlat_to_pixels(finite_degrees(lon, "longitude"), finite_degrees(lat, "latitude"), s.input_size)
            self._add_click(s, x, y, kind, add)

    def _add_click(self, s: Session, x: float, y: float, kind: str, add: bool = False) -> None:
        """What a click does in either view, (x, y) in input pixels (the session is in use).
        Positive: a new selection of this point, or with `add` one more point of the current
        one. Negative: one more point of the current selection, to take a part away (alone it
        would select the rest of the panorama, so without a selection it is refused). Box: the
        first corner starts a new selection (with `add` the points stay), the second completes
        the box. Each click is one undo step."""
        if kind == "box":
            if not s.add_box_corner(x, y, new=not add):
                return
        elif kind == "positive":
            s.add_point(x, y, positive=True, new=not add)
        elif kind == "negative":
            if not s.has_prompts:
                raise InputError("A negative point takes a part away from a selection: first click on what you "
                                 "want (Positive point or Box), then add negative points where the mask spills over.")
            s.add_point(x, y, positive=False)
        else:
            raise InputError(f"A click adds a positive point, a negative point or a box corner, not {kind!r}.")
        self._predict_or_undo(s)

    def prompt(self, s: Session, prompt_json: Any) -> None:
        """Prompts SAM's decoder with explicit coordinates: JSON text or a dict with points,
        labels, box and append (keep the current points and box); see `prompts.parse_prompt`."""
        with self.store.use(s):
            points, labels, box = parse_prompt(prompt_json, s)
            s.set_prompts(points, labels, box)
            self._predict_or_undo(s)

    def select(self, s: Session, index: Any) -> None:
        """Selects candidate mask 0, 1 or 2 of the last prompt."""
        with self.store.use(s):
            if index is not None and s.candidates is not None:
                s.select(whole_number(index, "candidate", 0, len(s.candidates) - 1))

    def assign(self, s: Session, class_name: Any, candidate: Any = None) -> int:
        """Writes a class (name or index; default: the majority under the mask) into the map
        under the selected candidate (or candidate 0-2); returns the changed pixel count."""
        with self.store.use(s):
            if s.candidates is None:
                raise InputError("Nothing to assign: click on the panorama (or send a prompt) to get a mask first.")
            if candidate is not None and candidate != "":
                s.select(whole_number(candidate, "candidate", 0, len(s.candidates) - 1))
            if class_name is None or class_name == "":
                mc = s.majority_class()
                if mc is None:
                    raise InputError("Choose a class to assign.")
                class_name = mc
            elif not isinstance(class_name, (str, int)) or isinstance(class_name, bool):
                raise InputError("The class must be a class name or index.")
            return s.assign(class_name)

    def undo(self, s: Session) -> Optional[str]:
        """Reverts the last prompt change or edit and re-runs the decoder on the prompts left;
        returns "prompts", "labels" or None (nothing to undo)."""
        with self.store.use(s):
            what = s.undo()
            if what is not None:
                self.predict(s)
            return what

    def clear(self, s: Session) -> bool:
        """Removes all prompts and candidate masks (undoable)."""
        with self.store.use(s):
            return s.clear_prompts()


__all__ = ["EditEvents"]
