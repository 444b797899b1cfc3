"""The chain detectors, one module each, and the order they run in on a decided tools/call.

Detections are reported in this order. The first group judges the call against what came before it
(the previous tool, earlier sensitive reads); the second counts the call in, so the tracker records the
call's signals between the two. `probing` judges probes (calls refused before policy), not decided calls.
"""

from gateway.chain.detectors.base import Detection, Detector
from gateway.chain.detectors.burst import Burst
from gateway.chain.detectors.novel_sequence import NovelSequence
from gateway.chain.detectors.probing import Probing
from gateway.chain.detectors.repeated_denials import RepeatedDenials
from gateway.chain.detectors.sensitive_then_egress import SensitiveThenEgress

BEFORE_RECORD = (SensitiveThenEgress, NovelSequence)
AFTER_RECORD = (Burst, RepeatedDenials)

__all__ = ["AFTER_RECORD", "BEFORE_RECORD", "Burst", "Detection", "Detector", "NovelSequence", "Probing",
           "RepeatedDenials", "SensitiveThenEgress"]
