"""The demo world: a procedural generator of small Kinetics-like and Charades-Ego-like datasets.

Nothing can be downloaded where the demo runs, so it draws its own world and
writes it as real H.264 files and manifests in the real formats (so every real
code path runs), plus per-frame ground truth for training the demo teachers.
See ``ground_truth/README.md`` (written by ``make_demo``) for the GT format.

One *script* is a person doing 1-2 activities with objects on a table. Its
motion lives in an actor frame (``x`` lateral in the actor's own right-hand
direction, ``h`` height above the table, both in "actor units" ~ 1 px of a
third-person frame) and is filmed by one of two views:

* exo: a static camera facing the person (their right hand appears on the image
  left), optionally zoomed ~2.5x on the hands ("close-up", third-person video
  that looks egocentric — the premise of Ego-Exo);
* ego: a head-mounted camera: no head or torso, forearms entering from the
  bottom edge, large objects, and smooth head motion of the whole scene.

Every shape is a polygon in view coordinates, moved by one per-frame camera
affine; GT boxes are the extents of the same polygons, so they match the pixels.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

FPS = 15
WIDTH, HEIGHT = 160, 120
ACTIVITIES = ("pick up", "put down", "push", "pour", "open", "wave", "walk", "clap")
ACTION_IDS = tuple(f"c{i:03d}" for i in range(len(ACTIVITIES)))
OBJECT_CATEGORIES = ("cup", "bottle", "box", "ball", "book", "phone")
CONTACT_NONE, CONTACT_PORTABLE = 0, 3  # 100DOH contact-state codes
KINETICS_SECONDS, CHARADES_SECONDS = 2.0, 4.0
KINETICS_PER_CLASS = {"train": 60, "val": 10}  # at scale 1.0
# Kinetics clips are framed on the person acting, Charades-Ego's third-person camera is a wide
# shot of the room: the Kinetics-like exo camera zooms this much on the actor (close-ups more).
KINETICS_FRAMING_ZOOM = (1.4, 1.8)
CHARADES_PAIRS = {"train": 64, "test": 32}
CLOSEUP_FRACTION = 0.2
CRF = 20

# Activities that need a particular object; the rest accept any.
OBJECTS_FOR = {"push": ("cup", "box", "ball", "book"), "pour": ("bottle", "cup"), "open": ("box",)}
CONTACT_ACTIVITIES = ("pick up", "put down", "push", "pour", "open")

# (width, height) in actor units and base colour (RGB) per category.
_OBJECT_LOOK = {
    "cup": ((10.0, 10.0), (215, 60, 50)),
    "bottle": ((6.5, 19.0), (40, 165, 80)),
    "box": ((16.0, 11.0), (185, 135, 70)),
    "ball": ((12.0, 12.0), (50, 90, 220)),
    "book": ((12.0, 16.0), (145, 55, 165)),
    "phone": ((8.0, 14.0), (35, 35, 45)),
}
_SKIN_TONES = ((255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (96, 62, 36))
_SCENES = ("Kitchen", "Bedroom", "Living room", "Home Office / Study", "Dining room")
_YT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_CHARADES_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SIDES = {1: "right", -1: "left"}  # the actor's own hands
_EXO, _EGO = "exo", "ego"


def objects_for(activity: str) -> tuple[str, ...]:
    return OBJECTS_FOR.get(activity, OBJECT_CATEGORIES)


# ----------------------------------------------------------------------------- geometry


_UNIT_CIRCLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _ellipse(cx: float, cy: float, a: float, b: float, angle: float = 0.0, n: int = 18) -> np.ndarray:
    if n not in _UNIT_CIRCLES:
        t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        _UNIT_CIRCLES[n] = (np.cos(t), np.sin(t))
    cos_t, sin_t = _UNIT_CIRCLES[n]
    c, s = math.cos(angle), math.sin(angle)
    x, y = a * cos_t, b * sin_t
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _rect(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _limb(p0, p1, w0: float, w1: float) -> np.ndarray:
    """A quad from p0 (width w0) to p1 (width w1)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return np.array([p0 + n * w0 / 2, p1 + n * w1 / 2, p1 - n * w1 / 2, p0 - n * w0 / 2])


def _rotate(pts: np.ndarray, pivot, degrees: float) -> np.ndarray:
    """Rotate (x, h) points about pivot; positive tips the top towards +x."""
    if not degrees:
        return pts
    r = math.radians(degrees)
    c, s = math.cos(r), math.sin(r)
    d = pts - pivot
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1) + pivot


def _affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _similarity(zoom: float, degrees: float, center, target) -> np.ndarray:
    """2x3 matrix: rotate+zoom about ``center`` and move it to ``target``."""
    r = math.radians(degrees)
    a = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]) * zoom
    return np.concatenate([a, (np.asarray(target, float) - a @ np.asarray(center, float))[:, None]], axis=1)


def _ease(v: float) -> float:
    v = min(max(v, 0.0), 1.0)
    return v * v * (3 - 2 * v)


def _lerp(a, b, w: float) -> list[float]:
    return [a[0] + (b[0] - a[0]) * w, a[1] + (b[1] - a[1]) * w]


def _shade(colour, f: float) -> tuple[int, ...]:
    """f < 1 darkens, f > 1 lightens towards white."""
    c = np.asarray(colour, float)
    c = c * f if f <= 1 else c + (255 - c) * (f - 1)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _jitter(rng: np.random.Generator, colour, amount: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255))


# ----------------------------------------------------------------------------- the script


@dataclass
class _Object:
    category: str
    w: float
    h: float
    x0: float  # resting position on the table
    parts: list  # [(local (x, h) points, colour, is_lid)]


@dataclass
class _Segment:
    activity: str
    start: float
    end: float
    a0: float  # the motion runs from a0 to a1 (fractions of the segment)
    a1: float
    side: int  # active hand: +1 right, -1 left
    direction: int
    amp: float
    freq: float
    flag: bool  # walk: come back; open: other hand holds the box


@dataclass
class _Script:
    objects: list
    main: int
    container: int | None
    segments: list
    rest: dict  # side -> (x, h)
    look: dict


def _object_parts(cat: str, w: float, h: float, col) -> list:
    dark, light = _shade(col, 0.65), _shade(col, 1.45)
    if cat == "cup":
        return [
            (_ellipse(0.52 * w, 0.55 * h, 0.22 * w, 0.27 * h), dark, False),
            (np.array([[-0.4 * w, 0], [0.4 * w, 0], [0.5 * w, h], [-0.5 * w, h]]), col, False),
            (_ellipse(0, h, 0.5 * w, 0.1 * h), light, False),
        ]
    if cat == "bottle":
        return [
            (_rect(-w / 2, 0, w / 2, 0.68 * h), col, False),
            (np.array([[-w / 2, 0.68 * h], [w / 2, 0.68 * h], [0.2 * w, 0.8 * h], [-0.2 * w, 0.8 * h]]), col, False),
            (_rect(-0.2 * w, 0.8 * h, 0.2 * w, 0.95 * h), col, False),
            (_rect(-0.25 * w, 0.93 * h, 0.25 * w, h), (235, 235, 225), False),
            (_rect(-w / 2, 0.25 * h, w / 2, 0.5 * h), light, False),
        ]
    if cat == "box":
        return [
            (_rect(-w / 2, 0, w / 2, 0.78 * h), col, False),
            (_rect(-0.07 * w, 0, 0.07 * w, 0.78 * h), dark, False),
            (_rect(-0.54 * w, 0.76 * h, 0.54 * w, h), dark, True),
        ]
    if cat == "ball":
        return [
            (_ellipse(0, h / 2, w / 2, h / 2, n=24), col, False),
            (_ellipse(0, h / 2, w / 2, 0.12 * h, n=16), light, False),
        ]
    if cat == "book":
        return [
            (_rect(-w / 2, 0, w / 2, h), col, False),
            (_rect(-w / 2, 0, -0.3 * w, h), dark, False),
            (_rect(0.34 * w, 0.05 * h, w / 2, 0.95 * h), (240, 235, 220), False),
        ]
    if cat == "phone":
        return [
            (_rect(-w / 2, 0, w / 2, h), col, False),
            (_rect(-0.38 * w, 0.14 * h, 0.38 * w, 0.9 * h), _shade((110, 190, 230), 1.0), False),
            (_ellipse(0, 0.07 * h, 0.08 * w, 0.04 * h, n=8), _shade(col, 1.6), False),
        ]
    raise ValueError(cat)


def _make_script(rng: np.random.Generator, segments, main_category: str) -> _Script:
    """Everything about a performance that both views share: look, objects, motion parameters."""
    side = int(rng.choice([-1, 1]))
    rest = {s: (s * rng.uniform(11, 16), rng.uniform(4.5, 8)) for s in (1, -1)}

    needs_container = any(a == "pour" for a, _, _ in segments)
    categories = [main_category] + (["cup"] if needs_container else [])
    n_total = max(len(categories), int(rng.integers(1, 4)))
    categories += [str(c) for c in rng.choice(OBJECT_CATEGORIES, n_total - len(categories))]

    objects: list[_Object] = []
    for i, cat in enumerate(categories):
        (bw, bh), base = _OBJECT_LOOK[cat]
        s = rng.uniform(0.85, 1.2)
        w, h = bw * s, bh * s
        col = _jitter(rng, base, 28)
        for _ in range(60):  # rejection-sample a free spot on the table
            if i == 0:
                x = side * rng.uniform(6, 22)
            elif i == 1 and needs_container:
                x = objects[0].x0 - side * rng.uniform(15, 22)
            else:
                x = rng.uniform(-34, 34)
            if all(abs(x - o.x0) > (w + o.w) / 2 + 2.5 for o in objects):
                break
        objects.append(_Object(cat, w, h, float(x), _object_parts(cat, w, h, col)))

    wall = [_jitter(rng, rng.integers(60, 220, 3), 0) for _ in range(2)]
    look = {
        "skin": _jitter(rng, _SKIN_TONES[rng.integers(len(_SKIN_TONES))], 12),
        "shirt": _jitter(rng, rng.integers(20, 235, 3), 0),
        "pants": _jitter(rng, rng.integers(20, 120, 3), 0),
        "hair": _jitter(rng, (40, 30, 20), 25),
        "long_sleeves": bool(rng.random() < 0.4),
        "wall": wall,
        "floor": _jitter(rng, rng.integers(50, 170, 3), 0),
        "table": _jitter(rng, (rng.integers(90, 200), rng.integers(60, 150), rng.integers(30, 110)), 20),
        "liquid": _jitter(rng, (90, 150, 220) if rng.random() < 0.5 else (170, 110, 40), 20),
        "scale": float(rng.uniform(0.9, 1.15)),  # exo person size
        "px": float(rng.uniform(62, 98)),  # exo person position
        "table_y": float(rng.uniform(80, 90)),
        "table_half": float(rng.uniform(55, 75)),
        "ego_y": float(rng.uniform(88, 98)),
        "ego_horizon": float(rng.uniform(24, 46)),
    }
    segs = []
    for activity, start, end in segments:
        a0, a1 = rng.uniform(0.0, 0.18), rng.uniform(0.78, 1.0)
        direction = int(rng.choice([-1, 1]))
        amp = {"pick up": (14, 24), "put down": (14, 24), "push": (12, 20), "pour": (95, 125),
               "open": (8, 13), "wave": (4, 7), "walk": (30, 55), "clap": (17, 25)}[activity]
        freq = rng.uniform(1.6, 2.8) if activity in ("wave", "clap") else rng.uniform(1.4, 2.0)
        if activity == "push":  # push towards the table's middle when near an edge
            x = objects[0].x0
            direction = -int(np.sign(x)) if abs(x) > 14 else direction
        if activity == "walk":  # towards the side with room, so the exo person stays in frame
            direction = -1 if look["px"] < WIDTH / 2 else 1
        if activity == "pour":
            direction = int(np.sign(objects[1].x0 - objects[0].x0)) or 1
        segs.append(_Segment(activity, float(start), float(end), a0, a1, side, direction,
                             float(rng.uniform(*amp)), float(freq), bool(rng.random() < 0.5)))
    # A walk followed by another activity comes back, so the next one starts at the table.
    for seg in segs[:-1]:
        if seg.activity == "walk":
            seg.flag = True

    return _Script(objects, 0, 1 if needs_container else None, segs, rest, look)


# ----------------------------------------------------------------------------- motion


@dataclass
class _Pose:
    hands: dict  # side -> [x, h]
    objects: list  # per object: [x, h, tilt degrees, lid open 0..1, lid side * lift]
    contact: dict  # side -> object index or None
    body_dx: float = 0.0
    stride: float = 0.0
    bob: float = 0.0
    pouring: bool = False


# Each activity moves the rest pose p: v is progress (0..1) through the segment's active
# part, ts seconds since the segment began (for oscillations), seg its parameters.


def _pick_up(p, v, ts, seg, sc):
    o, s = sc.objects[sc.main], seg.side
    grasp = [o.x0, 0.45 * o.h]
    if v < 0.45:
        p.hands[s] = _lerp(p.hands[s], grasp, _ease(v / 0.45))
        return
    w = _ease((v - 0.55) / 0.45)
    p.hands[s] = [o.x0 * (1 - 0.25 * w), grasp[1] + seg.amp * w]
    p.objects[sc.main][:2] = [p.hands[s][0], p.hands[s][1] - grasp[1]]
    p.contact[s] = sc.main


def _put_down(p, v, ts, seg, sc):
    o, s = sc.objects[sc.main], seg.side
    grasp = [o.x0, 0.45 * o.h]
    held = [0.75 * o.x0, grasp[1] + seg.amp]
    if v < 0.55:
        p.hands[s] = _lerp(held, grasp, _ease(v / 0.45))
        p.objects[sc.main][:2] = [p.hands[s][0], p.hands[s][1] - grasp[1]]
        p.contact[s] = sc.main if v < 0.5 else None
    else:
        p.hands[s] = _lerp(grasp, p.hands[s], _ease((v - 0.55) / 0.45))


def _push(p, v, ts, seg, sc):
    o, s, d = sc.objects[sc.main], seg.side, seg.direction
    start = [o.x0 - d * (o.w / 2 + 3.0), 0.45 * o.h]
    if v < 0.4:
        p.hands[s] = _lerp(p.hands[s], start, _ease(v / 0.4))
        return
    shift = d * seg.amp * _ease((v - 0.4) / 0.5)
    p.objects[sc.main][0] = o.x0 + shift
    if v < 0.9:
        p.hands[s] = [start[0] + shift, start[1]]
        p.contact[s] = sc.main
    else:
        p.hands[s] = [start[0] + shift - d * 4 * _ease((v - 0.9) / 0.1), start[1]]


def _pour(p, v, ts, seg, sc):
    o, c, s, d = sc.objects[sc.main], sc.objects[sc.container], seg.side, seg.direction
    grasp = [o.x0, 0.45 * o.h]
    hold = [c.x0 - d * 0.3 * o.h, c.h + 3 + 0.45 * o.h]
    if v < 0.25:
        p.hands[s] = _lerp(p.hands[s], grasp, _ease(v / 0.25))
        return
    p.contact[s] = sc.main
    p.hands[s] = _lerp(grasp, hold, _ease((v - 0.25) / 0.2))
    tilt = seg.amp * (_ease((v - 0.45) / 0.2) if v < 0.8 else 1 - _ease((v - 0.8) / 0.15))
    p.objects[sc.main][:3] = [p.hands[s][0], p.hands[s][1] - grasp[1], d * tilt]
    p.pouring = tilt > 65


def _open(p, v, ts, seg, sc):
    o, s = sc.objects[sc.main], seg.side
    grasp = [o.x0 + s * 0.3 * o.w, o.h + 0.5]
    if seg.flag:  # the other hand steadies the box
        hold = [o.x0 - s * (o.w / 2 + 2.0), 0.4 * o.h]
        p.hands[-s] = _lerp(p.hands[-s], hold, _ease(v / 0.3))
        p.contact[-s] = sc.main if v >= 0.3 else None
    if v < 0.35:
        p.hands[s] = _lerp(p.hands[s], grasp, _ease(v / 0.35))
        return
    lid = _ease((v - 0.35) / 0.55)
    p.objects[sc.main][3:] = [lid, s * seg.amp]
    p.hands[s] = [grasp[0] + s * 0.3 * o.w * lid, grasp[1] + seg.amp * lid]
    p.contact[s] = sc.main


def _wave(p, v, ts, seg, sc):
    s = seg.side
    phase = 2 * math.pi * seg.freq * ts
    up = [s * (15 + seg.amp) + seg.amp * math.sin(phase), 46 + 1.5 * math.cos(2 * phase)]
    p.hands[s] = _lerp(p.hands[s], up, _ease(v / 0.2))


def _walk(p, v, ts, seg, sc):
    d = seg.direction * seg.amp
    p.body_dx = d * (1 - abs(2 * v - 1)) if seg.flag else d * v
    moving = 0.0 < v < 1.0
    p.stride = math.sin(2 * math.pi * seg.freq * ts) if moving else 0.0
    p.bob = math.sin(4 * math.pi * seg.freq * ts) if moving else 0.0
    for s in (1, -1):
        p.hands[s] = [p.hands[s][0] + p.body_dx + 1.5 * s * p.stride, p.hands[s][1] + 2.5 * s * p.stride]


def _clap(p, v, ts, seg, sc):
    gap = 3.8 + 8.5 * (0.5 + 0.5 * math.cos(2 * math.pi * seg.freq * ts))
    for s in (1, -1):
        p.hands[s] = _lerp(p.hands[s], [s * gap, seg.amp], _ease(v / 0.15))


_MOTIONS = {"pick up": _pick_up, "put down": _put_down, "push": _push, "pour": _pour,
            "open": _open, "wave": _wave, "walk": _walk, "clap": _clap}


def _pose(sc: _Script, t: float) -> _Pose:
    p = _Pose(
        hands={s: list(sc.rest[s]) for s in (1, -1)},
        objects=[[o.x0, 0.0, 0.0, 0.0, 1] for o in sc.objects],
        contact={1: None, -1: None},
    )
    seg = next((g for g in sc.segments if g.start <= t < g.end), sc.segments[-1])
    u = (t - seg.start) / (seg.end - seg.start)
    v = min(max((u - seg.a0) / (seg.a1 - seg.a0), 0.0), 1.0)
    _MOTIONS[seg.activity](p, v, t - seg.start, seg, sc)
    return p


# ----------------------------------------------------------------------------- views


def _object_polys(o: _Object, state) -> list:
    """Object parts in actor (x, h) coordinates for one pose: lid lifted, whole object tilted about the grip."""
    x, h, tilt, lid, lid_lift = state
    out = []
    for pts, col, is_lid in o.parts:
        if is_lid and lid:  # slide towards the opening hand, lift with it, tip up its far edge
            shift = np.array([math.copysign(0.3 * o.w * lid, lid_lift), abs(lid_lift) * lid])
            pts = _rotate(pts + shift, shift + [0.0, o.h], math.copysign(30 * lid, lid_lift))
        pts = _rotate(pts, np.array([0.0, 0.45 * o.h]), tilt)
        out.append((pts + [x, h], col))
    return out


class _View:
    """Maps the actor frame to view coordinates (before the camera) and lays out one frame's shapes."""

    mirror = 1  # +1: actor's right on the image right (ego); -1: facing the camera (exo)

    def __init__(self, sc: _Script):
        self.sc, self.look = sc, sc.look

    def place(self, x: float, h: float, body_dx: float) -> np.ndarray:
        raise NotImplementedError

    def local(self, pts: np.ndarray, x: float, h: float, body_dx: float = 0.0) -> np.ndarray:
        """Actor-frame points (around anchor x, h) -> view coordinates, at this view's size."""
        anchor = self.place(x, h, body_dx)
        return anchor + (pts - [x, h]) * [self.mirror * self.size, -self.size]

    def hand_polys(self, center, wrist_from) -> list:
        d = center - wrist_from
        angle = math.atan2(d[1], d[0])
        a, b = 4.2 * self.size, 3.3 * self.size
        n = np.array([-math.sin(angle), math.cos(angle)])
        thumb = center + np.array([math.cos(angle), math.sin(angle)]) * 0.2 * a + n * 0.95 * b
        return [_ellipse(center[0], center[1], a, b, angle, n=16),
                _ellipse(thumb[0], thumb[1], 0.45 * a, 0.3 * a, angle + 0.7, n=10)]

    def shapes(self, p: _Pose):
        """Draw list [(points, colour)] plus GT polygons per hand side and per object."""
        sc, look = self.sc, self.look
        held = set(v for v in p.contact.values() if v is not None)
        obj_polys = {}
        for i, o in enumerate(sc.objects):
            st = p.objects[i]
            parts = [(self.local(pts, st[0], st[1], p.body_dx), col) for pts, col in _object_polys(o, st)]
            obj_polys[i] = parts
        draw = self.backdrop(p)
        for i in obj_polys:
            if i not in held:
                draw += obj_polys[i]
        hands = {s: self.place(*p.hands[s], p.body_dx) for s in (1, -1)}
        wrists = {}
        for s in (1, -1):
            limb, wrists[s] = self.arm(s, hands[s], p)
            draw += limb
        for i in sorted(held):
            draw += obj_polys[i]
        if p.pouring:
            o, c = sc.objects[sc.main], sc.objects[sc.container]
            mouth = _rotate(np.array([[0.0, o.h]]), np.array([0.0, 0.45 * o.h]), p.objects[sc.main][2])[0]
            st = p.objects[sc.main]
            top = self.place(c.x0, c.h, p.body_dx)
            start = self.local(mouth[None] + st[:2], st[0], st[1], p.body_dx)[0]
            draw.append((_limb(start, top, 1.0 * self.size, 0.7 * self.size), look["liquid"]))
        hand_polys = {}
        for s in (1, -1):
            hand_polys[s] = self.hand_polys(hands[s], wrists[s])
            draw += [(hand_polys[s][1], _shade(look["skin"], 0.85)), (hand_polys[s][0], look["skin"])]
        return draw, hand_polys, {i: [q for q, _ in parts] for i, parts in obj_polys.items()}


class _ExoView(_View):
    mirror = -1

    def __init__(self, sc: _Script):
        super().__init__(sc)
        self.size = self.look["scale"]

    def place(self, x, h, body_dx=0.0):
        lk = self.look
        return np.array([lk["px"] - self.size * x, lk["table_y"] - self.size * h])

    def backdrop(self, p: _Pose) -> list:
        lk, k = self.look, self.size
        cx, ty = lk["px"] - k * p.body_dx, lk["table_y"]
        out = []
        for s in (1, -1):  # legs, swinging when walking
            hip = [cx - s * 5 * k, ty + 8 * k]
            foot = [hip[0] + s * 7 * k * p.stride, ty + 40 * k]
            out.append((_limb(hip, foot, 6 * k, 5 * k), lk["pants"]))
        sy = ty - 40 * k
        torso = [[cx - 12 * k, sy], [cx + 12 * k, sy], [cx + 10 * k, ty + 10 * k], [cx - 10 * k, ty + 10 * k]]
        out.append((np.array(torso), lk["shirt"]))
        out.append((_rect(cx - 2.5 * k, sy - 6 * k, cx + 2.5 * k, sy + 1), lk["skin"]))
        out.append((_ellipse(cx, ty - 54 * k, 8.6 * k, 6.5 * k, n=20), lk["hair"]))
        out.append((_ellipse(cx, ty - 51 * k, 8 * k, 8.5 * k, n=24), lk["skin"]))
        x1, x2 = lk["px"] - lk["table_half"] * k, lk["px"] + lk["table_half"] * k
        out.append((_rect(x1, ty, x2, HEIGHT + 10), lk["table"]))
        out.append((_rect(x1, ty - 1.5, x2, ty + 2.5), _shade(lk["table"], 1.25)))
        return out

    def arm(self, s: int, hand: np.ndarray, p: _Pose):
        """Shoulder -> elbow -> hand with a two-link bend, the elbow pointing outwards."""
        lk, k = self.look, self.size
        shoulder = np.array([lk["px"] - k * (p.body_dx + s * 12), lk["table_y"] - 40 * k])
        seg = 20 * k
        d = hand - shoulder
        dist = float(np.hypot(*d)) + 1e-9
        mid = shoulder + d / 2
        perp = np.array([-d[1], d[0]]) / dist
        outward = s * self.mirror  # image direction of this side
        if perp[0] * outward < 0:
            perp = -perp
        elbow = mid + perp * math.sqrt(max(seg * seg - (dist / 2) ** 2, 0.0))
        forearm = lk["shirt"] if lk["long_sleeves"] else lk["skin"]
        return [(_limb(shoulder, elbow, 5 * k, 4.5 * k), lk["shirt"]),
                (_limb(elbow, hand, 4.5 * k, 3.8 * k), forearm)], elbow


class _EgoView(_View):
    S_POS = 2.0  # view px per actor unit for positions...
    mirror = 1

    def __init__(self, sc: _Script):
        super().__init__(sc)
        self.size = 2.3  # ...and for sizes: close things look big

    def place(self, x, h, body_dx=0.0):
        hc = h if h <= 24 else 24 + 0.45 * (h - 24)  # keep raised hands in view
        return np.array([WIDTH / 2 + self.S_POS * (x - body_dx), self.look["ego_y"] - self.S_POS * hc])

    def backdrop(self, p: _Pose) -> list:
        return []  # wall and table top are in the background image

    def arm(self, s: int, hand: np.ndarray, p: _Pose):
        base = np.array([hand[0] + s * 26 + 8 * s, HEIGHT + 40])
        out = [(_limb(base, hand, 17, 11), self.look["skin"])]
        if self.look["long_sleeves"]:
            out.append((_limb(base, base + (hand - base) * 0.75, 19, 14), self.look["shirt"]))
        return out, base


def _background(rng: np.random.Generator, look: dict, view: str, margin: int) -> np.ndarray:
    """The static backdrop (wall + floor, or wall + table top for ego), with margin for camera motion."""
    h, w = HEIGHT + 2 * margin, WIDTH + 2 * margin
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    c1, c2 = (np.asarray(c, np.float32) for c in look["wall"])
    g = {0: ys, 1: xs, 2: (xs + ys) / 2}[int(rng.integers(3))]
    img = c1 + (c2 - c1) * g
    img = np.broadcast_to(img, (h, w, 3)).copy()
    for _ in range(int(rng.integers(2, 7))):  # posters, windows, shelves
        col = tuple(float(v) for v in rng.integers(30, 235, 3))
        x, y = rng.uniform(0, w), rng.uniform(0, h * 0.7)
        if rng.random() < 0.5:
            cv2.rectangle(img, (int(x), int(y)), (int(x + rng.uniform(8, 40)), int(y + rng.uniform(8, 30))), col, -1)
        else:
            cv2.ellipse(img, (int(x), int(y)), (int(rng.uniform(4, 18)), int(rng.uniform(4, 14))), 0, 0, 360, col, -1)
    if view == _EXO:
        horizon = int(margin + look["table_y"] + rng.uniform(-4, 10))
        floor = np.asarray(look["floor"], np.float32)
        img[horizon:] = floor * np.linspace(0.8, 1.1, h - horizon, dtype=np.float32)[:, None, None]
    else:
        horizon = int(margin + look["ego_horizon"])
        table = np.asarray(look["table"], np.float32)
        grain = cv2.resize(rng.standard_normal((h // 2, 3), dtype=np.float32), (w, h - horizon))
        shading = np.linspace(0.85, 1.1, h - horizon, dtype=np.float32)[:, None, None]
        img[horizon:] = table * shading + 9 * grain[..., None]
        img[horizon - 2 : horizon + 2] = np.asarray(_shade(look["table"], 0.6), np.float32)
    texture = cv2.resize(rng.standard_normal((h // 10 + 1, w // 10 + 1, 3), dtype=np.float32), (w, h))
    return np.clip(img + 7 * texture, 0, 255).astype(np.uint8)


def _draw(img: np.ndarray, m: np.ndarray, shapes) -> None:
    for pts, col in shapes:
        q = np.round(_affine(m, pts) * 16).astype(np.int32)
        cv2.fillPoly(img, [q], tuple(int(c) for c in col), cv2.LINE_AA, shift=4)


def _box(m: np.ndarray, polys) -> list[float] | None:
    """Normalised, frame-clipped box around polygons; None if (almost) nothing is in the frame."""
    pts = _affine(m, np.concatenate(polys))
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    x1, x2 = max(x1, 0.0), min(x2, float(WIDTH))
    y1, y2 = max(y1, 0.0), min(y2, float(HEIGHT))
    if x2 - x1 < 0.5 or y2 - y1 < 0.5:
        return None
    return [round(float(v), 4) for v in (x1 / WIDTH, y1 / HEIGHT, x2 / WIDTH, y2 / HEIGHT)]


# ----------------------------------------------------------------------------- one video


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render one video; the same (seed, domain, index) gives the same script."""

    stem: str
    rel_path: str  # from the demo root
    seed: int
    domain: int  # 0 Kinetics-like, 1 Charades-Ego-like
    index: int  # script number within the domain
    segments: tuple  # ((activity, start, end), ...)
    main_object: str
    ego: bool
    closeup: bool
    duration: float


def _camera_shake(rng: np.random.Generator, ego: bool, closeup: bool) -> dict[str, list]:
    """Slow sinusoids (amplitude, Hz, phase) per degree of freedom: x, y in px, r in degrees, z zoom fraction.

    Head motion for the ego view; a slight tripod wobble (more when zoomed) for exo.
    """

    def sinusoids(amp: float, n: int) -> list:
        return [(amp / (i + 1) * rng.uniform(0.5, 1.0), rng.uniform(0.2, 1.2), rng.uniform(0, 2 * np.pi))
                for i in range(n)]

    if ego:
        amps = {"x": rng.uniform(2, 5), "y": rng.uniform(2, 5), "r": rng.uniform(1.5, 3.5),
                "z": rng.uniform(0.01, 0.04)}
        return {k: sinusoids(a, 2) for k, a in amps.items()}
    return {k: sinusoids(1.0 if closeup else 0.4, 1) for k in ("x", "y")}


def _framing_center(view: _View, poses: list, zoom: float) -> np.ndarray:
    """Where a camera framed on the person looks: their chest (18 units above the table) at its
    mean position over the clip, kept inside the scene."""
    half = np.array([WIDTH, HEIGHT]) / (2 * zoom)
    center = np.mean([view.place(p.body_dx, 18.0, p.body_dx) for p in poses], axis=0)
    return np.clip(center, half, np.array([WIDTH, HEIGHT]) - half)


def _closeup_center(view: _View, sc: _Script, poses: list, zoom: float) -> np.ndarray:
    """Where a close-up looks: the mean of the active hands and the main object over the clip, kept inside the scene."""
    active = [g.side for g in sc.segments]
    pts = [view.place(*p.hands[s], p.body_dx) for p in poses for s in active]
    pts += [view.place(p.objects[sc.main][0], p.objects[sc.main][1] + sc.objects[sc.main].h / 2) for p in poses]
    half = np.array([WIDTH, HEIGHT]) / (2 * zoom)
    return np.clip(np.mean(pts, axis=0), half, np.array([WIDTH, HEIGHT]) - half)


def render_clip(spec: VideoSpec) -> tuple[np.ndarray, dict]:
    """Draw one video: ``[n, HEIGHT, WIDTH, 3]`` uint8 RGB frames and its ground-truth dict."""
    sc = _make_script(np.random.default_rng([spec.seed, spec.domain, spec.index]), spec.segments, spec.main_object)
    rng = np.random.default_rng([spec.seed, spec.domain, spec.index, 1 + spec.ego])
    n = int(round(spec.duration * FPS))
    poses = [_pose(sc, i / FPS) for i in range(n)]
    view = _EgoView(sc) if spec.ego else _ExoView(sc)
    margin = 24
    bg = _background(rng, sc.look, _EGO if spec.ego else _EXO, margin)

    shake = _camera_shake(rng, spec.ego, spec.closeup)
    center, zoom = np.array([WIDTH / 2, HEIGHT / 2]), 1.0
    if spec.closeup:
        zoom = rng.uniform(2.2, 2.8)
        center = _closeup_center(view, sc, poses, zoom)
    elif spec.domain == 0 and not spec.ego:
        zoom = rng.uniform(*KINETICS_FRAMING_ZOOM)
        center = _framing_center(view, poses, zoom)

    def osc(k: str, t: float) -> float:
        return sum(a * math.sin(2 * math.pi * f * t + ph) for a, f, ph in shake.get(k, []))

    frames = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    gt_frames = []
    for i, p in enumerate(poses):
        t = i / FPS
        target = np.array([WIDTH / 2 + osc("x", t), HEIGHT / 2 + osc("y", t) + 3.0 * p.bob * spec.ego])
        m = _similarity(zoom * (1 + osc("z", t)), osc("r", t), center, target)
        pan = -_EgoView.S_POS * p.body_dx if spec.ego else 0.0  # the head moves with the walking body
        m_bg = m.copy()
        m_bg[:, 2] += m[:, :2] @ np.array([pan - margin, -margin])
        img = cv2.warpAffine(bg, m_bg, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        draw, hand_polys, obj_polys = view.shapes(p)
        _draw(img, m, draw)
        noise = rng.standard_normal((HEIGHT, WIDTH, 1), dtype=np.float32) * 2.0
        frames[i] = np.clip(img + noise, 0, 255).astype(np.uint8)

        objects, where = [], {}
        held = {v for v in p.contact.values() if v is not None}
        for j, o in enumerate(sc.objects):
            box = _box(m, obj_polys[j])
            if box is not None:
                where[j] = len(objects)
                objects.append({"box": box, "category": o.category, "in_contact": j in held})
        hands = []
        for s in (1, -1):
            box = _box(m, hand_polys[s])
            if box is not None:
                j = p.contact[s]
                hands.append({"box": box, "side": _SIDES[s], "contact": CONTACT_NONE if j is None else CONTACT_PORTABLE,
                              "object": where.get(j) if j is not None else None})
        gt_frames.append({"t": t, "hands": hands, "objects": objects})

    gt = {
        "video": spec.rel_path,
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "num_frames": n,
        "ego": spec.ego,
        "closeup": spec.closeup,
        "actions": [[a, s, e] for a, s, e in spec.segments],
        "main_object": spec.main_object,
        "frames": gt_frames,
    }
    return frames, gt


def write_video(path: str | Path, frames: np.ndarray, fps: int = FPS, crf: int = CRF) -> None:
    """Encode RGB frames as H.264 (yuv420p) MP4 with time_base 1/fps and pts = frame index.

    Reproducible bytes: one encoder thread (x264's output depends on its thread
    count), and mbtree off — with it on, this x264 build gave different P/B frames
    for the same input in about one encode in five (seen; not with asm off).
    """
    import av

    with av.open(str(path), "w") as container:
        options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps  # a keyframe a second, for cheap seeking
        stream.codec_context.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_one(spec: VideoSpec, out_dir: str) -> int:
    frames, gt = render_clip(spec)
    out = Path(out_dir)
    write_video(out / spec.rel_path, frames)
    (out / "ground_truth" / f"{spec.stem}.json").write_text(json.dumps(gt) + "\n")
    return len(frames)


# ----------------------------------------------------------------------------- the world


def _count(base: int, scale: float) -> int:
    return max(1, int(round(base * scale)))


def _unique_ids(rng: np.random.Generator, alphabet: str, length: int, n: int) -> list[str]:
    ids: list[str] = []
    seen = set()
    while len(ids) < n:
        s = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), length))
        if s not in seen:
            seen.add(s)
            ids.append(s)
    return ids


def _plan(seed: int, scale: float):
    """Decide every video (ids, labels, splits, views) from the seed; rendering details come later per video."""
    rng = np.random.default_rng(seed)
    kinetics = []  # (label, youtube_id, start, split, spec)
    per_split = [(split, _count(n, scale)) for split, n in KINETICS_PER_CLASS.items()]
    jobs = [(a, split) for a in ACTIVITIES for split, n in per_split for _ in range(n)]
    yt_ids = _unique_ids(rng, _YT_ALPHABET, 11, len(jobs))
    closeups = set(rng.choice(len(jobs), int(round(CLOSEUP_FRACTION * len(jobs))), replace=False).tolist())
    for i, ((activity, split), yid) in enumerate(zip(jobs, yt_ids)):
        start = int(rng.integers(0, 290))
        stem = f"{yid}_{start:06d}_{start + 2:06d}"
        spec = VideoSpec(stem, f"kinetics/videos/{stem}.mp4", seed, 0, i, ((activity, 0.0, KINETICS_SECONDS),),
                         str(rng.choice(objects_for(activity))), False, i in closeups, KINETICS_SECONDS)
        kinetics.append((activity, yid, start, split, spec))

    charades = []  # (id, split, segments, main_object, subject, scene, specs)
    pairs = [(split, _count(n, scale)) for split, n in CHARADES_PAIRS.items()]
    n_scripts = sum(n for _, n in pairs)
    ids = _unique_ids(rng, _CHARADES_ALPHABET, 5, n_scripts)
    subjects = _unique_ids(rng, _CHARADES_ALPHABET, 4, 12)
    k = 0
    for split, n in pairs:
        for i in range(n):
            first = ACTIVITIES[i % len(ACTIVITIES)]
            while True:  # a second activity whose objects are compatible with the first
                second = ACTIVITIES[int(rng.integers(len(ACTIVITIES)))]
                common = [c for c in objects_for(first) if c in objects_for(second)]
                if second != first and common:
                    break
            if rng.random() < 0.5:
                first, second = second, first
            half = CHARADES_SECONDS / 2
            segments = ((first, 0.0, half), (second, half, CHARADES_SECONDS))
            main = str(rng.choice(common))
            vid = ids[k]
            specs = tuple(
                VideoSpec(stem, f"charades_ego/videos/{stem}.mp4", seed, 1, k, segments, main, ego, False,
                          CHARADES_SECONDS)
                for stem, ego in ((vid, False), (vid + "EGO", True))
            )
            charades.append((vid, split, segments, main, str(rng.choice(subjects)), str(rng.choice(_SCENES)), specs))
            k += 1
    return kinetics, charades


def demo_video_specs(seed: int = 0, scale: float = 1.0) -> list[VideoSpec]:
    """The specs of every video ``make_demo(seed=seed, scale=scale)`` writes, in its order.

    ``render_clip(spec)`` re-draws a video's exact frames and ground truth without decoding it.
    """
    kinetics, charades = _plan(seed, scale)
    return [row[-1] for row in kinetics] + [s for row in charades for s in row[-1]]


def _render_all(specs: list[VideoSpec], out_dir: Path, workers: int) -> int:
    if workers <= 1 or len(specs) < 8:
        return sum(_write_one(s, str(out_dir)) for s in specs)
    # spawn, not fork: the caller may hold threads (torch, Ray) that fork would copy mid-lock.
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=cv2.setNumThreads, initargs=(1,))
    with pool:
        return sum(pool.map(_write_one, specs, [str(out_dir)] * len(specs), chunksize=4))


_GT_README = """\
# Demo-world ground truth

One JSON file per video, named after the video's stem:

```
{{
  "video": "kinetics/videos/<id>.mp4",   # path from the demo root
  "fps": {fps}, "width": {w}, "height": {h}, "num_frames": n,
  "ego": false,        # true for head-mounted (Charades-Ego-like ...EGO) videos
  "closeup": false,    # true for third-person clips zoomed ~2.5x on the hands
  "actions": [["pick up", 0.0, 2.0], ...],   # activity name, start, end (seconds)
  "main_object": "cup",  # the object category the activity is about; for the
                         # no-contact activities (wave, walk, clap) an object present in the scene
  "frames": [
    {{"t": 0.0,        # = i / fps, the time of decoded frame i
     "hands": [{{"box": [x1, y1, x2, y2], "side": "right", "contact": 3, "object": 0}}],
     "objects": [{{"box": [x1, y1, x2, y2], "category": "cup", "in_contact": true}}]}}
  ]
}}
```

* Boxes are normalised to [0, 1] of the frame (x by width, y by height), clipped to
  the frame, with x1 < x2 and y1 < y2. A hand or object wholly outside the frame is
  left out of that frame's lists; occlusion does not remove it.
* `side` is the person's own hand (a person facing the camera shows their right
  hand on the image left).
* `contact` uses the 100DOH contact-state codes: 0 = no contact, 3 = portable
  object (the only two this world produces; clapping hands are coded 0).
* `object` indexes this frame's `objects` list: the object the hand holds, or
  null (no contact, or the held object is out of frame).
* Activity names and their Charades-style ids (c000 ...) and the object categories
  are in `../demo_world.json`.
"""


def make_demo(out_dir: str | Path, seed: int = 0, scale: float = 1.0, workers: int | None = None) -> dict:
    """Write the demo world under ``out_dir`` and return a summary (paths and counts).

    Layout: ``kinetics/{videos/*.mp4, kinetics_demo.csv}``,
    ``charades_ego/{videos/*.mp4, CharadesEgo_v1_train.csv, CharadesEgo_v1_test.csv,
    Charades_v1_classes.txt}``, ``ground_truth/{<stem>.json, README.md}``, ``demo_world.json``.
    At scale 1.0: 192 Kinetics-like clips (8 classes x (20 train + 4 val), 2 s, ~20 %
    close-ups) and 96 Charades-Ego-like script pairs (64 train + 32 test; 4 s, two
    activities each, filmed third-person and head-mounted). ``scale`` multiplies the
    counts (at least one per class and split). The same seed gives byte-identical
    manifests and ground truth and identical frames; ``workers`` processes render
    (default: up to 4 of the available cores). Rewriting a directory is allowed only
    with the seed and scale it was made with (``FileExistsError`` otherwise), so two
    worlds never mix.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    # demo_world.json is written last (its presence means "complete"); the partial marker
    # records the config of a run in progress, so an interrupted one cannot be mixed either.
    partial = out / ".demo_world.partial.json"
    for marker in (out / "demo_world.json", partial):
        made = json.loads(marker.read_text()) if marker.exists() else {"seed": seed, "scale": scale}
        if (made.get("seed"), made.get("scale")) != (seed, scale):
            raise FileExistsError(
                f"{out} holds a demo world with seed {made.get('seed')}, scale {made.get('scale')}; "
                f"write seed {seed}, scale {scale} to another directory"
            )
    out.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps({"seed": seed, "scale": scale}) + "\n")
    for d in ("kinetics/videos", "charades_ego/videos", "ground_truth"):
        (out / d).mkdir(parents=True, exist_ok=True)
    kinetics, charades = _plan(seed, scale)

    specs = [row[-1] for row in kinetics] + [s for row in charades for s in row[-1]]
    if workers is None:
        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    n_frames = _render_all(specs, out, workers)

    kinetics_csv = out / "kinetics" / "kinetics_demo.csv"
    with open(kinetics_csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for label, yid, start, split, _ in sorted(kinetics, key=lambda r: (r[0], r[1])):
            w.writerow([label, yid, start, start + int(KINETICS_SECONDS), split])

    header = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
              "descriptions", "actions", "length", "egocentric", "charades_video"]
    charades_csv = {}
    for split in CHARADES_PAIRS:
        path = charades_csv[split] = out / "charades_ego" / f"CharadesEgo_v1_{split}.csv"
        rows = []
        for vid, s, segments, main, subject, scene, _ in charades:
            if s != split:
                continue
            (a1, _, _), (a2, _, _) = segments
            script = f"A person does '{a1}', then '{a2}'; the main object is a {main}."
            objects = ";".join([main] + (["cup"] if any(a == "pour" for a, _, _ in segments) and main != "cup" else []))
            actions = ";".join(f"{ACTION_IDS[ACTIVITIES.index(a)]} {st:.2f} {en:.2f}" for a, st, en in segments)
            for rid, ego in ((vid, "No"), (vid + "EGO", "Yes")):
                rows.append([rid, subject, scene, 6, 6, "Yes", script, objects, script, actions,
                             f"{CHARADES_SECONDS:.2f}", ego, ""])
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(sorted(rows))

    # The demo's own label sets (not Kinetics-400's or Charades' 157): stages read them with
    # ``classes=<file>``, as a user with Kinetics-600/700 or another label set would.
    (out / "kinetics" / "classes.txt").write_text("".join(f"{name}\n" for name in ACTIVITIES))
    classes_txt = out / "charades_ego" / "Charades_v1_classes.txt"
    classes_txt.write_text("".join(f"{cid} {name}\n" for cid, name in zip(ACTION_IDS, ACTIVITIES)))
    (out / "ground_truth" / "README.md").write_text(_GT_README.format(fps=FPS, w=WIDTH, h=HEIGHT))

    counts = {
        "kinetics": {split: sum(r[3] == split for r in kinetics) for split in KINETICS_PER_CLASS},
        "kinetics_closeups": sum(r[-1].closeup for r in kinetics),
        "charades_ego_pairs": {split: sum(r[1] == split for r in charades) for split in CHARADES_PAIRS},
        "charades_ego_videos": 2 * len(charades),
        "frames": n_frames,
    }
    world = {
        "seed": seed,
        "scale": scale,
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "actions": [{"id": cid, "name": name} for cid, name in zip(ACTION_IDS, ACTIVITIES)],
        "object_categories": list(OBJECT_CATEGORIES),
        "contact_codes": {str(CONTACT_NONE): "no contact", str(CONTACT_PORTABLE): "portable object"},
        "counts": counts,
        "files": {
            "kinetics_csv": "kinetics/kinetics_demo.csv",
            "kinetics_classes": "kinetics/classes.txt",
            "kinetics_video_dir": "kinetics/videos",
            "charades_ego_train_csv": "charades_ego/CharadesEgo_v1_train.csv",
            "charades_ego_test_csv": "charades_ego/CharadesEgo_v1_test.csv",
            "charades_classes": "charades_ego/Charades_v1_classes.txt",
            "charades_ego_video_dir": "charades_ego/videos",
            "ground_truth": "ground_truth",
        },
    }
    (out / "demo_world.json").write_text(json.dumps(world, indent=2) + "\n")
    partial.unlink()
    return {
        "out_dir": str(out),
        **{k: str(out / v) for k, v in world["files"].items()},
        "demo_world_json": str(out / "demo_world.json"),
        **counts,
        "seconds": round(time.perf_counter() - t0, 2),
    }
