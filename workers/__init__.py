"""Capture-side workers: camera/video input, MediaPipe pose estimation, OpenPose-18 output."""
