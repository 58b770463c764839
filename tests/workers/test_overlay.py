"""The annotated video on real frames with real MediaPipe skeletons and hand-made results."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import run_pipeline
from pipeline.endpoints import free_endpoints
from pipeline.messages import Frame, frame_from_arrays
from pipeline.results import UNKNOWN, Label, PersonResult, Result, StreamEnded
from pipeline.transport import ResultPublisher
from workers import capture
from workers.overlay import (
    FUTURE_COLOR,
    LEGEND_PREDICTED,
    NO_PERSON,
    UNKNOWN_COLOR,
    Overlay,
    annotate,
    draw_labels,
    draw_text,
    future_legend,
    person_color,
    text_layers,
    text_style,
)
from workers.person_tracker import PersonTracker
from workers.pose import PoseEstimator
from workers.video_source import open_source

VIDEOS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "videos"
LATENCY = {k: 0.0 for k in ("pose", "transport", "queue", "inference", "total")}
Clip = list[tuple[np.ndarray, Frame]]


def tracked(name: str, count: int) -> Clip:
    """The first ``count`` frames of a shared video with their tracked MediaPipe skeletons."""
    out = []
    with PoseEstimator() as estimator, open_source(video=VIDEOS / name) as source:
        tracker = PersonTracker()
        for index, image, ts in source:
            if index >= count:
                break
            people = estimator.estimate(image, ts)
            out.append((image, frame_from_arrays("clip", index, 0.0, source.width, source.height, "openpose",
                                                 people, tracker.update(people), 0.0, joints=18)))
    return out


@pytest.fixture(scope="module")
def three() -> Clip:
    """exercise_three_people.avi (384x288): nobody in frames 0-4, three people from frame 15."""
    return tracked("exercise_three_people.avi", 48)


@pytest.fixture(scope="module")
def hd() -> Clip:
    """ntu_two_person.avi (1920x1080): two people."""
    return tracked("ntu_two_person.avi", 6)


def person(track: int, label: str, score: float, next_frame: np.ndarray | None = None) -> PersonResult:
    return PersonResult(track, label, score, [Label(label, score)],
                        None if next_frame is None else next_frame.tolist())


def result(seq: int, people: list[PersonResult]) -> Result:
    return Result("clip", seq, 0.0, 0.0, "inference", LATENCY, people)


def labelled(frame: Frame, seq: int | None = None, shift: float = 0.0) -> Result:
    """A result at ``seq`` (default: the frame's) labelling the frame's people wave / unknown /
    squat in turn, each predicting their skeleton moved by ``shift``."""
    names = [("wave", 0.87), (UNKNOWN, 0.41), ("squat", 0.6)]
    people = []
    for k, p in enumerate(frame.persons):
        kp = p.keypoints.copy()
        kp[:, 0] += shift * (kp[:, 2] > 0)
        people.append(person(p.track, *names[k % 3], kp))
    return result(frame.seq if seq is None else seq, people)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


@pytest.mark.parametrize("clip", ["three", "hd"])
def test_each_label_is_drawn_inside_the_image_above_its_person(clip: str, request: pytest.FixtureRequest) -> None:
    image, frame = request.getfixturevalue(clip)[-1]
    assert len(frame.persons) == (3 if clip == "three" else 2)
    res = labelled(frame)
    out = image.copy()
    drawn = draw_labels(out, frame, res)
    height, width = image.shape[:2]
    assert [d.track for d in drawn] != [] and sorted(d.track for d in drawn) == sorted(p.track for p in frame.persons)
    texts = {p.id: ("unknown" if p.label == UNKNOWN else f"{p.label} {100 * p.score:.0f}%") for p in res.people}
    inside = np.zeros((height, width), bool)
    for d in drawn:
        skeleton = next(p.keypoints for p in frame.persons if p.track == d.track)
        xy = skeleton[skeleton[:, 2] > 0, :2] * (width, height)
        x0, y0, x1, y1 = d.box
        assert d.text == texts[d.track]
        assert d.color == (UNKNOWN_COLOR if d.text == "unknown" else person_color(d.track))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x0 < xy[:, 0].max() and x1 > xy[:, 0].min()  # over the person
        assert y1 <= xy[:, 1].min() and xy[:, 1].min() - y1 < 0.2 * height  # just above their head
        assert (y1 - y0) >= 0.025 * height  # readable: text scales with the frame
        region = out[y0:y1, x0:x1].astype(int)
        fill = np.all(np.abs(region - d.color) <= 40, axis=2) & changed(out, image)[y0:y1, x0:x1]
        assert fill.sum() > 0.04 * fill.size, d  # the text's fill is there, in the person's colour
        before = np.median(image[y0:y1, x0:x1].astype(int).sum(axis=2))
        assert np.median(region.sum(axis=2)) <= 0.55 * before, d  # a darker backdrop behind the text
        inside[y0:y1, x0:x1] = True
    for a in drawn:
        for b in drawn:
            assert a is b or not (a.box[0] < b.box[2] and b.box[0] < a.box[2] and a.box[1] < b.box[3]
                                  and b.box[1] < a.box[3])
    assert not (changed(out, image) & ~inside).any()  # nothing drawn outside the labels


def test_fill_lies_inside_its_outline_on_a_real_frame(hd: Clip) -> None:
    image = hd[0][0]
    style = text_style(image.shape[0])
    fill, outline = text_layers("hugging other person 78%", style)
    assert np.all(outline >= fill)
    cols = np.flatnonzero(fill.max(axis=0))
    ocols = np.flatnonzero(outline.max(axis=0))
    assert ocols[0] <= cols[0] - style.outline and ocols[-1] >= cols[-1] + style.outline  # no drift at either end
    out = image.copy()
    color = person_color(0)
    x0, y0, x1, y1 = draw_text(out, "hugging other person 78%", 100, 60, color, style)  # on the white wall
    touched = changed(out, image)[y0:y1, x0:x1]
    full_fill = np.all(out[y0:y1, x0:x1] == color, axis=2)
    assert full_fill.sum() > 500
    core = cv2.erode(touched.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert not (full_fill & ~core).any()  # every fill pixel has outline (or fill) all around it
    dark = np.all(out[y0:y1, x0:x1] < 60, axis=2) & touched
    assert dark.sum() > 0.5 * full_fill.sum()


def test_a_frame_with_nobody_shows_only_no_person(three: Clip) -> None:
    image, frame = three[2]
    assert frame.persons == ()  # the clip fades in
    out = annotate(image, frame, result(3, []), result(1, []))
    drawn = draw_labels(image.copy(), frame, result(3, []))
    assert [(d.track, d.text, d.color) for d in drawn] == [(None, NO_PERSON, UNKNOWN_COLOR)]
    x0, y0, x1, y1 = drawn[0].box
    mask = changed(out, image)
    assert mask[y0:y1, x0:x1].any() and not mask.sum() - mask[y0:y1, x0:x1].sum()


def test_prediction_and_legend_only_for_the_frame_predicted(three: Clip) -> None:
    image, frame = three[-1]
    current = labelled(frame, frame.seq + 2)
    plain = annotate(image, frame, current)
    for stale in (frame.seq - 2, frame.seq, frame.seq + 1):  # predicted for another frame: not drawn
        assert np.array_equal(annotate(image, frame, current, labelled(frame, stale, 0.03)), plain)
    assert np.array_equal(annotate(image, frame, current, result(frame.seq - 1, [person(0, "wave", 0.9)])), plain)
    with_prediction = annotate(image, frame, current, labelled(frame, frame.seq - 1, 0.03))
    height, width = image.shape[:2]
    diff = changed(with_prediction, plain)
    white = np.all(with_prediction == 255, axis=2) & diff
    assert white[: int(0.8 * height)].sum() > 50  # the dashed skeletons
    corner = diff[int(0.75 * height):, : width // 2]
    assert corner.mean() > 0.3  # the legend, bottom left
    assert not changed(plain, image)[int(0.85 * height):, : width // 3].any()  # nothing there without it
    assert LEGEND_PREDICTED == "predicted next frame"


def test_the_skeleton_predicted_frames_before_is_drawn_in_yellow_with_its_legend(three: Clip) -> None:
    image, frame = three[-1]
    current = labelled(frame, frame.seq + 2)
    plain = annotate(image, frame, current)
    moved = labelled(frame, frame.seq - 10, 0.03)
    earlier = result(moved.seq, [PersonResult(p.id, p.label, p.score, p.top, p.next_frame, [p.next_frame] * 10)
                                 for p in moved.people])
    out = annotate(image, frame, current, None, earlier, fps=30.0)
    yellow = np.all(out == FUTURE_COLOR, axis=2) & changed(out, plain)
    assert yellow[: int(0.8 * image.shape[0])].sum() > 50  # the skeletons predicted 10 frames before
    assert future_legend(10, 30.0) == "predicted 10 frames before (333 ms)"
    too_short = result(moved.seq, [PersonResult(p.id, p.label, p.score, p.top, p.next_frame, [p.next_frame] * 9)
                                   for p in moved.people])
    assert np.array_equal(annotate(image, frame, current, None, too_short, fps=30.0), plain)  # does not reach it
    one_before = result(frame.seq - 1, earlier.people)  # a next-frame prediction: white, not yellow
    assert not (np.all(annotate(image, frame, current, None, one_before) == FUTURE_COLOR, axis=2)).any()


class Recorder:
    """Stands in for the video writer: keeps what is written and passes it on."""

    def __init__(self, writer: cv2.VideoWriter) -> None:
        self.writer, self.frames = writer, []

    def write(self, image: np.ndarray) -> None:
        self.frames.append(image)
        self.writer.write(image)

    def release(self) -> None:
        self.writer.release()


def start(tmp_path: Path, clip: Clip, **kwargs: float) -> tuple[ResultPublisher, Overlay, Recorder]:
    endpoint = free_endpoints(1)[0]
    publisher = ResultPublisher(endpoint)
    height, width = clip[0][0].shape[:2]
    overlay = Overlay(endpoint, "clip", width, height, 10.0, str(tmp_path / "out.avi"), **kwargs)
    overlay.writer = recorder = Recorder(overlay.writer)
    time.sleep(0.5)  # the subscription reaches the publisher
    return publisher, overlay, recorder


def publish(publisher: ResultPublisher, record: Result | StreamEnded) -> None:
    publisher.publish(record)
    time.sleep(0.1)


def test_frames_go_out_in_order_with_the_result_that_covers_them(tmp_path: Path, three: Clip) -> None:
    publisher, overlay, recorder = start(tmp_path, three)
    frames = {f.seq: (img, f) for img, f in three}
    results = {seq: labelled(frames[seq][1], seq, 0.02) for seq in (29, 33, 37, 41, 45)}
    for img, f in three[:44]:  # inference far behind: no result yet for 44 frames
        overlay.add(f, img)
    assert recorder.frames == []
    for seq in (29, 33, 37):
        publish(publisher, results[seq])
    overlay.add(*three[44][::-1])
    assert len(recorder.frames) == 38  # frames 0-37 are covered
    for seq in (41, 45):
        publish(publisher, results[seq])
    for img, f in three[45:]:
        overlay.add(f, img)
    publish(publisher, StreamEnded("clip", "eof"))
    overlay.close(wait_s=5)
    publisher.close()
    assert len(recorder.frames) == len(three)
    for seq, written in enumerate(recorder.frames):
        image, frame = frames[seq]
        covering = results[min([s for s in results if s >= seq], default=45)]
        expected = annotate(image, frame, covering, results.get(seq - 1))
        assert np.array_equal(written, expected), seq
    predicted = [seq for seq in range(len(three)) if seq - 1 in results]
    assert predicted == [30, 34, 38, 42, 46]
    video = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(three)
    video.release()
    assert overlay.late_frames == 0


def test_a_full_buffer_gives_up_on_the_oldest_frames_with_one_warning(
    tmp_path: Path, three: Clip, caplog: pytest.LogCaptureFixture
) -> None:
    frame_mb = three[0][0].nbytes / 2**20
    publisher, overlay, recorder = start(tmp_path, three, max_buffer_mb=4.5 * frame_mb)
    publish(publisher, labelled(three[19][1], 19))
    with caplog.at_level(logging.WARNING, logger="workers.overlay"):
        for img, f in three[20:32]:
            overlay.add(f, img)
    assert len(overlay.pending) == 4 and len(recorder.frames) == 8
    assert overlay.late_frames == 8
    warnings = [r.getMessage() for r in caplog.records if "no result for frame 20" in r.getMessage()]
    assert len(warnings) == 1 and "latest earlier label" in warnings[0]
    for k, written in enumerate(recorder.frames):
        image, frame = three[20 + k]
        assert np.array_equal(written, annotate(image, frame, labelled(three[19][1], 19), labelled(three[19][1], 19)))
    overlay.close(wait_s=0.2)
    publisher.close()
    assert len(recorder.frames) == 12


def test_save_video_with_another_extension_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "out.gif"
    with pytest.raises(ValueError, match=r"out\.gif.*use \.mp4 or \.avi"):
        Overlay(free_endpoints(1)[0], "clip", 64, 48, 10.0, str(target))
    assert run_pipeline.main(["--save-video", str(target), "--video", str(VIDEOS / "tai_chi.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out.gif" in err[0] and ".mp4 or .avi" in err[0], err
    assert capture.main(["--video", str(VIDEOS / "tai_chi.mp4"), "--save-video", str(tmp_path / "clip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("capture: error: --save-video") and "no extension" in err[-1], err
    assert not target.exists() and not (tmp_path / "clip").exists()
