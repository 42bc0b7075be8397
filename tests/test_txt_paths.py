"""Image paths of a txt list stay under the images' base: each escape form is refused with
the file and line, at count time (the Dataset's Ready condition) and when a URL is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointserve.api import DatasetSpec
from jointserve.datasets import DatasetFormatError, count_dataset, image_url, read_txt_list

ESCAPES = ["/etc/passwd", "../secret.png", "a/../../b.png", "a\\b.png", "http://evil/x.png",
           "file:///etc/passwd", "//host/x.png", "%2e%2e/x.png", "a\x01.png"]


@pytest.mark.parametrize("path", ESCAPES)
def test_an_escaping_path_is_named_with_its_line(tmp_path: Path, path: str) -> None:
    index = tmp_path / "index.txt"
    index.write_text(f"ok.png cat\n{path}\tdog\n")
    with pytest.raises(DatasetFormatError) as caught:
        count_dataset(index, "txt")
    assert caught.value.reason == "TxtPathEscapes"
    assert str(caught.value).startswith("index.txt line 2: image path")
    with pytest.raises(DatasetFormatError):
        image_url("http://127.0.0.1/images/", path)


def test_plain_relative_paths_are_read_and_joined(tmp_path: Path) -> None:
    index = tmp_path / "index.txt"
    index.write_text("# comment\n\na/b.png 1\nc..d.png 2\n")
    samples = read_txt_list(index)
    assert [(s.path, s.label, s.line) for s in samples] == [("a/b.png", "1", 3), ("c..d.png", "2", 4)]
    assert image_url("http://h/base", "a/b.png") == "http://h/base/a/b.png"


def test_the_base_is_txt_base_url_or_the_index_directory() -> None:
    spec = DatasetSpec(url="http://h/sets/index.txt", sha256sum="0" * 64, format="txt")
    assert spec.images_base() == "http://h/sets/"
    spec = DatasetSpec(url="http://h/sets/index.txt", sha256sum="0" * 64, format="txt",
                       txt={"baseURL": "https://cdn/images"})
    assert spec.images_base() == "https://cdn/images/"
    with pytest.raises(ValueError, match="txt: options are for format txt"):
        DatasetSpec(url="http://h/x.csv", sha256sum="0" * 64, format="csv", txt={})
