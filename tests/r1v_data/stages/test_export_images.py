"""The llamafactory export writes each distinct image once, however far apart its rows are: the
folder, not a set of every hash, remembers what is written (memory does not grow with images)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from r1v_data.stages.export import _ImageFiles


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (shade, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def test_images_are_written_once_past_the_cache_of_recent_ones(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    files = _ImageFiles(tmp_path, recent=2)
    a, b, c = _png(1), _png(2), _png(3)
    paths = [files.save(x) for x in (a, b, a, c, b, a, a)]  # a and b fall out of the cache and return
    assert paths[0] == paths[2] == paths[5] and paths[1] == paths[4] and len(set(paths)) == 3
    assert files.written == 3 and len(list((tmp_path / "images").iterdir())) == 3
    assert all(p.endswith(".png") and (tmp_path / p).read_bytes() in (a, b, c) for p in paths)
    assert len(files._names) <= 2
