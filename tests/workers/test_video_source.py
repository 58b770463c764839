"""Camera and video-file input on the real videos, truncated copies and missing devices."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from workers.video_source import SourceError, open_source

REPO = Path(__file__).resolve().parents[2]
VIDEOS = REPO / ".." / "shared" / "data" / "videos"
TAI_CHI = VIDEOS / "tai_chi.mp4"
EXERCISE = VIDEOS / "exercise_three_people.avi"


def truncated_copy(src: Path, dst: Path) -> Path:
    """Write the first half of the bytes of ``src`` to ``dst``."""
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_file_properties_frames_and_deterministic_timestamps() -> None:
    with open_source(video=str(TAI_CHI)) as source:
        assert not source.live
        assert source.fps == pytest.approx(29.97, abs=0.01)
        assert (source.width, source.height, source.frame_count) == (340, 256, 300)
        assert source.name.endswith("tai_chi.mp4")
        items = list(source)
    assert [i for i, _, _ in items] == list(range(300))
    assert all(f.shape == (256, 340, 3) and f.dtype == np.uint8 for _, f, _ in items)
    stamps = [t for _, _, t in items]
    assert stamps == [round(i * 1000 / source.fps) for i in range(300)]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    with open_source(video=TAI_CHI) as again:
        assert [t for _, _, t in again] == stamps
    assert source.decode_failures == 0


def test_avi_timestamps_follow_its_fps() -> None:
    with open_source(video=EXERCISE) as source:
        assert source.fps == 10.0
        first = [next(iter(source)) for _ in range(4)]
    assert [t for _, _, t in first] == [0, 100, 200, 300]
    assert first[0][1].shape == (288, 384, 3)


def test_seek_resumes_at_the_exact_frame_and_timestamp() -> None:
    with open_source(video=TAI_CHI) as source:
        reference = {i: (f, t) for i, f, t in source if i in (0, 5, 120)}
    with open_source(video=TAI_CHI) as source:
        source.seek(120)
        index, frame, ts = next(iter(source))
        assert (index, ts) == (120, reference[120][1])
        np.testing.assert_array_equal(frame, reference[120][0])
        source.seek(5)
        index, frame, _ = next(iter(source))
        assert index == 5
        np.testing.assert_array_equal(frame, reference[5][0])
        source.seek(400)
        assert source.read() is None
        assert source.decode_failures == 0


def test_truncated_avi_ends_cleanly_with_a_counted_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = truncated_copy(EXERCISE, tmp_path / "half.avi")
    with caplog.at_level(logging.WARNING, logger="workers.video_source"):
        with open_source(video=path) as source:
            frames = list(source)
    assert 0 < len(frames) < 393
    assert source.decode_failures == 1
    assert any("half.avi" in r.getMessage() for r in caplog.records)


def test_truncated_mp4_is_a_source_error_naming_the_file(tmp_path: Path) -> None:
    path = truncated_copy(TAI_CHI, tmp_path / "half.mp4")
    with pytest.raises(SourceError, match="half.mp4"):
        open_source(video=path)


def test_non_video_and_missing_files_are_source_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(SourceError, match="notes.mp4"):
        open_source(video=text)
    with pytest.raises(SourceError, match="no_such_clip.avi"):
        open_source(video=tmp_path / "no_such_clip.avi")


def test_missing_camera_is_one_clear_source_error() -> None:
    with pytest.raises(SourceError, match=r"^camera 99 could not be opened"):
        open_source(camera=99)


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="a camera 0 exists here")
def test_camera_zero_without_a_device_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"^camera 0 could not be opened"):
        open_source(camera=0)


def test_exactly_one_of_camera_or_video() -> None:
    with pytest.raises(ValueError):
        open_source()
    with pytest.raises(ValueError):
        open_source(camera=0, video=str(TAI_CHI))


def test_bundled_default_video_is_the_shared_clip() -> None:
    bundled = REPO / "assets" / "tai_chi.mp4"
    assert bundled.read_bytes() == TAI_CHI.read_bytes()
    assert "yysijie/st-gcn" in (REPO / "assets" / "README.md").read_text()
