"""The source seam: a video's name, its bytes, and the decoders reading only through it."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from r21d_features.utils.core.errors import VideoDecodeError
from r21d_features.utils.video.decoders import open_video
from r21d_features.utils.video.sources import LocalFile, Source, as_source, open_source
from tests.conftest import SAMPLES


@dataclass(frozen=True)
class InMemory:
    """A source that is no file: its bytes are in memory (as an object-store stream would be)."""

    name: str
    data: bytes

    def problem(self) -> str | None:
        return None

    def check(self) -> None:
        if not self.data:
            raise VideoDecodeError("empty file (0 bytes)")

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def local_path(self) -> str | None:
        return None

    def ffmpeg_url(self) -> str | None:
        return None


def frames_of(reader) -> list[np.ndarray]:
    return [np.concatenate([a.ravel() for a in planes.arrays]) for _, planes in reader.frames()]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_a_source_that_is_no_file_decodes_to_the_same_frames_and_info(sample):
    memory = InMemory(f"memory/{sample.name}", sample.read_bytes())
    assert isinstance(memory, Source)
    from_file, from_memory = open_video(sample), open_video(memory)
    assert from_memory.info.path == memory.name
    same_info = {k: v for k, v in vars(from_file.info).items() if k != "path"}
    assert {k: v for k, v in vars(from_memory.info).items() if k != "path"} == same_info
    assert same_info["frame_count_exact"]  # the container's head was read through the source
    file_frames, memory_frames = frames_of(from_file), frames_of(from_memory)
    assert len(file_frames) == len(memory_frames) > 0
    for a, b in zip(file_frames, memory_frames):
        np.testing.assert_array_equal(a, b)


def test_the_file_name_decoder_refuses_a_source_without_a_local_file():
    with pytest.raises(VideoDecodeError, match="decoder=opencv opens local files only .* use decoder=pyav"):
        open_video(InMemory("memory/clip.mp4", SAMPLES[0].read_bytes()), "opencv")


def test_an_empty_source_fails_its_check_before_decoding():
    with pytest.raises(VideoDecodeError, match=r"empty file \(0 bytes\)"):
        open_video(InMemory("memory/empty.mp4", b""))


@pytest.mark.parametrize("name", ["clip.mp4", "odd:name.mp4", "./odd:name.mp4", "concat:a.mp4|b.mp4", "pipe:0",
                                  "http:/x.mp4", "ünïcødé clip.mkv"])
def test_every_name_is_a_local_file_never_a_url(name):
    source = open_source(name)
    assert source == LocalFile(name) and source.local_path() == name and source.name == name
    assert as_source(Path(name)) == LocalFile(os.fspath(Path(name)))
    assert as_source(source) is source


def test_a_local_file_reports_why_it_cannot_be_read(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert "not a regular file" in open_source(str(fifo)).problem()
    assert open_source(str(tmp_path / "missing.mp4")).problem() == "file not found"  # one stat, before any claim
    with pytest.raises(VideoDecodeError, match="file not found"):
        open_source(str(tmp_path / "missing.mp4")).check()
    with pytest.raises(VideoDecodeError, match="is a directory"):
        open_source(str(tmp_path)).check()
