"""Streaming plumbing without torch: settings, wire messages, ZeroMQ transport, per-stream state and
window rules, result records, person slots and recordings.

Import the modules themselves (``pipeline.messages``, ``pipeline.transport``, ...): the package
imports nothing, so a command that only needs ``pipeline.cli`` or ``pipeline.settings`` (the
training CLIs, on a machine without ZeroMQ) does not load the sockets.
"""
