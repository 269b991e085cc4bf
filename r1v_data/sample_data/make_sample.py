"""Draw the bundled sample: small visual maths problems with exact answers.

The committed `sample.jsonl` and `images/` come from `python -m r1v_data.sample_data.make_sample`;
the drawing is seeded, so running it again rewrites the same problems. Three families: counting
shapes, reading a bar chart, a labelled triangle; two problems have two images each.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent
SIZE = (320, 240)
COLOURS = {
    "red": (220, 50, 47),
    "blue": (38, 139, 210),
    "green": (90, 160, 60),
    "orange": (240, 150, 30),
}
SHAPES = ("circle", "square", "triangle")


def _font(size: int = 15) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _place(rng: random.Random, n: int, r: int) -> list[tuple[int, int]]:
    """n non-overlapping centres inside the canvas."""
    spots: list[tuple[int, int]] = []
    while len(spots) < n:
        x, y = rng.randint(r + 4, SIZE[0] - r - 4), rng.randint(r + 4, SIZE[1] - r - 4)
        if all(math.dist((x, y), s) > 2 * r + 6 for s in spots):
            spots.append((x, y))
    return spots


def _draw_shape(
    d: ImageDraw.ImageDraw, shape: str, x: int, y: int, r: int, fill: tuple[int, int, int]
) -> None:
    if shape == "circle":
        d.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline="black")
    elif shape == "square":
        d.rectangle((x - r, y - r, x + r, y + r), fill=fill, outline="black")
    else:
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill, outline="black")


def shapes_image(rng: random.Random, counts: dict[tuple[str, str], int]) -> Image.Image:
    im = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(im)
    items = [key for key, n in counts.items() for _ in range(n)]
    rng.shuffle(items)
    for (shape, colour), (x, y) in zip(items, _place(rng, len(items), 16), strict=True):
        _draw_shape(d, shape, x, y, 16, COLOURS[colour])
    return im


def _random_counts(rng: random.Random, kinds: int, most: int) -> dict[tuple[str, str], int]:
    keys = rng.sample([(s, c) for s in SHAPES for c in COLOURS], kinds)
    return {k: rng.randint(1, most) for k in keys}


def _describe(counts: dict[tuple[str, str], int]) -> str:
    return ", ".join(f"{n} {c} {s}{'s' if n > 1 else ''}" for (s, c), n in counts.items())


def counting(rng: random.Random, level: int) -> tuple[dict[str, Any], list[Image.Image]]:
    counts = _random_counts(rng, kinds=level + 1, most=2 + level)
    shape = rng.choice(sorted({s for s, _ in counts}))
    if level == 1:
        q, answer = (
            f"How many {shape}s are there in the image?",
            sum(n for (s, _), n in counts.items() if s == shape),
        )
    elif level == 2:
        colour = rng.choice(sorted({c for _, c in counts}))
        q = f"How many shapes in the image are {colour}?"
        answer = sum(n for (_, c), n in counts.items() if c == colour)
    else:
        q, answer = "How many shapes are there in the image in total?", sum(counts.values())
    return (
        {
            "question": f"<image1>\n{q}",
            "answer": str(answer),
            "subject": "counting",
            "caption": f"A white picture with {_describe(counts)}.",
        },
        [shapes_image(rng, counts)],
    )


def counting_pair(rng: random.Random, level: int) -> tuple[dict[str, Any], list[Image.Image]]:
    first, second = _random_counts(rng, 2, 4), _random_counts(rng, 2, 6)
    total_1, total_2 = sum(first.values()), sum(second.values())
    q = "<image1> <image2>\nHow many shapes are there in the two images together?"
    return (
        {
            "question": q,
            "answer": str(total_1 + total_2),
            "subject": "counting",
            "caption": f"First image: {_describe(first)}. Second image: {_describe(second)}.",
        },
        [shapes_image(rng, first), shapes_image(rng, second)],
    )


def bar_chart(rng: random.Random, level: int) -> tuple[dict[str, Any], list[Image.Image]]:
    labels = list("ABCDEF"[: rng.randint(4, 6)])
    values = [rng.randint(1, 9) * 5 for _ in labels]
    im = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(im)
    left, bottom, top, scale = 40, 210, 20, 4  # 4 px per unit, axis up to 45
    for v in range(0, 50, 5):  # grid lines with values, so the chart can be read exactly
        y = bottom - v * scale
        d.line((left, y, SIZE[0] - 10, y), fill=(225, 225, 225))
        d.text((8, y - 7), str(v), fill="black", font=_font(12))
    width = (SIZE[0] - left - 20) // len(labels)
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        x0 = left + 8 + i * width
        d.rectangle((x0, bottom - v * scale, x0 + width - 14, bottom), fill=COLOURS["blue"], outline="black")
        d.text((x0 + width // 2 - 10, bottom + 6), lab, fill="black", font=_font(14))
    d.line((left, top, left, bottom), fill="black")
    d.line((left, bottom, SIZE[0] - 10, bottom), fill="black")
    target = rng.choice(labels)
    if level == 1:
        q, answer = f"What is the value of bar {target}?", values[labels.index(target)]
    elif level == 2:
        q, answer = (
            "What is the difference between the tallest and the shortest bar?",
            max(values) - min(values),
        )
    else:
        q, answer = "What is the sum of the values of all the bars?", sum(values)
    caption = (
        "A bar chart: " + ", ".join(f"bar {lab} = {v}" for lab, v in zip(labels, values, strict=True)) + "."
    )
    return {
        "question": f"<image1>\n{q}",
        "answer": str(answer),
        "subject": "chart reading",
        "caption": caption,
    }, [im]


def _triangle_canvas(
    rng: random.Random, right: bool = False
) -> tuple[Image.Image, ImageDraw.ImageDraw, list[tuple[int, int]]]:
    im = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(im)
    apex = (40, rng.randint(30, 70)) if right else (rng.randint(90, 230), rng.randint(30, 70))
    pts = [(40, 200), (280, 200), apex]
    d.polygon(pts, outline="black", width=2)
    if right:  # the right-angle mark at A
        d.line((40, 186, 54, 186, 54, 200), fill="black")
    for name, (x, y), (dx, dy) in zip("ABC", pts, [(-18, 0), (8, 0), (-5, -22)], strict=True):
        d.text((x + dx, y + dy), name, fill="black", font=_font(16))
    return im, d, pts


def triangle(rng: random.Random, level: int) -> tuple[dict[str, Any], list[Image.Image]]:
    im, d, pts = _triangle_canvas(rng, right=level > 1)
    if level == 1:
        a, b = rng.randint(30, 80), rng.randint(30, 70)
        d.text((pts[0][0] + 22, pts[0][1] - 22), f"{a}°", fill="black", font=_font(14))
        d.text((pts[1][0] - 45, pts[1][1] - 22), f"{b}°", fill="black", font=_font(14))
        q = "In triangle ABC, the angles at A and B are marked. What is the measure of angle C in degrees?"
        return (
            {
                "question": f"<image1>\n{q}",
                "answer": str(180 - a - b),
                "subject": "geometry",
                "caption": f"Triangle ABC with angle A = {a}° and angle B = {b}°.",
            },
            [im],
        )
    k = rng.randint(1, 4)
    legs = rng.choice([(3, 4, 5), (5, 12, 13), (8, 15, 17)])
    ab, ac, bc = (k * x for x in legs)
    d.text(
        ((pts[0][0] + pts[1][0]) // 2 - 8, pts[0][1] + 6),
        f"AB = {ab}",
        fill="black",
        font=_font(14),
    )
    d.text((pts[0][0] + 6, (pts[0][1] + pts[2][1]) // 2), f"AC = {ac}", fill="black", font=_font(14))
    q = "Triangle ABC has a right angle at A, with the side lengths shown. What is the length of BC?"
    record: dict[str, Any] = {
        "question": f"<image1>\n{q}",
        "answer": str(bc),
        "subject": "geometry",
        "caption": f"Right triangle ABC, right angle at A, AB = {ab}, AC = {ac}.",
    }
    if level == 3:  # multiple choice, the letter is the answer
        options = sorted({bc, bc + k, bc - k, ab + ac})
        while len(options) < 4:
            options.append(max(options) + 1)
        record["options"] = [str(o) for o in options]
        record["answer"] = "ABCD"[options.index(bc)]
    return record, [im]


FAMILIES: list[tuple[str, Callable[..., tuple[dict[str, Any], list[Image.Image]]], int]] = [
    ("count", counting, 4),
    ("chart", bar_chart, 4),
    ("tri", triangle, 4),
]


def _draw_new(
    rng: random.Random,
    fn: Callable[..., tuple[dict[str, Any], list[Image.Image]]],
    level: int,
    drawn: set[tuple[str, str]],
) -> tuple[dict[str, Any], list[Image.Image]]:
    """A problem not drawn before: the caption states everything the image shows, so the same
    question and caption would be the same problem twice (a small family repeats by chance)."""
    while True:
        record, images = fn(rng, level)
        key = (record["question"], record["caption"])
        if key not in drawn:
            drawn.add(key)
            return record, images


def build(out: Path = HERE, seed: int = 20250407) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    jobs = [(prefix, fn, level) for prefix, fn, per in FAMILIES for level in (1, 2, 3) for _ in range(per)]
    jobs += [("pair", counting_pair, 2)] * 2
    drawn: set[tuple[str, str]] = set()
    for i, (prefix, fn, level) in enumerate(jobs):
        record, images = _draw_new(rng, fn, level, drawn)
        paths = []
        for j, im in enumerate(images):
            path = f"images/{prefix}_{i:03d}_{j}.png"
            im.save(out / path, optimize=True)
            paths.append(path)
        rows.append(
            {
                "id": f"{prefix}-{i:03d}",
                "question": record["question"],
                "options": record.get("options", []),
                "answer": record["answer"],
                "images": paths,
                "subject": record["subject"],
                "difficulty": level,
                "caption": record["caption"],
            }
        )
    with open(out / "sample.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    print(f"wrote {len(build())} problems to {HERE}")
