import json
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


def fixture_path(name: str) -> str:
    return os.path.join(FIXTURES, name)


def load_fixture(name: str):
    """(image path, sidecar dict, truth array) of a committed fixture."""
    img = fixture_path(f"{name}.img")
    with open(img + ".json") as fh:
        side = json.load(fh)
    truth = np.fromfile(fixture_path(f"{name}.truth"), dtype=f"<u{side['word_size']}")
    return img, side, truth


@pytest.fixture
def tmp_image(tmp_path):
    """Build a spec into an image in tmp_path: returns (path, BuiltTree)."""
    from p2mdump.writer import build_tree
    from p2mdump.writer.image import write_raw_image

    def make(spec, name="guest.img"):
        tree = build_tree(spec)
        path = tmp_path / name
        write_raw_image(tree, path)
        return str(path), tree

    return make
