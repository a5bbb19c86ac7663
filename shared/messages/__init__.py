"""Typed message contracts shared by every service: bodies, envelope, encode/decode."""

from shared.messages.envelope import Body, Envelope, decode, encode
from shared.messages.files import FileDetected, shown
from shared.messages.jobs import JobEnded, JobRejected, JobStarted, JobSubmitted, Problem
from shared.messages.pods import PodFinished, PodLaunched

__all__ = [
    "Body",
    "Envelope",
    "FileDetected",
    "JobEnded",
    "JobRejected",
    "JobStarted",
    "JobSubmitted",
    "PodFinished",
    "PodLaunched",
    "Problem",
    "decode",
    "encode",
    "shown",
]
