"""AV1 scalable video through its Dependency Descriptor (AV1 RTP specification, appendix A):
the stream's reader (one per published track) and each subscriber's decode target selection.

`DdReader` follows the template structure (sent on each keyframe) and extends 16-bit frame
numbers. `DdSelector` decides, frame by frame, whether a frame belongs to the subscriber's
decode target: the highest target at or below the wanted layer whose chain is intact (§A.8.3.2:
every frame of the chain was forwarded since the last frame that restarted it), that the
publisher still sends, that needs this frame (its DTI is not "not present") and whose references
were not dropped. It then rewrites the descriptor for the subscriber: frame numbers continue
across pauses, and `active_decode_targets_bitmask` tells the decoder which targets it gets.
"""

from __future__ import annotations

from . import dependency_descriptor as ddw
from .dependency_descriptor import DdError, DependencyDescriptor, DependencyStructure

MAX_TEMPORAL = 7

# Per-frame decisions: unknown, dropped, or forwarded with the decode target's layer encoded
# as _FORWARDED + (spatial << 3 | temporal).
_UNKNOWN, _DROPPED, _FORWARDED = 0, 1, 2
_HISTORY = 512  # frames whose decision is remembered (power of two)


class DdPacket:
    """One packet's descriptor as the reader resolved it; reused for every packet."""

    __slots__ = (
        "descriptor",
        "descriptors",
        "frame",
        "publisher_mask",
        "raw",
        "structure",
        "structure_frame",
        "tails",
        "valid",
    )

    def __init__(self) -> None:
        self.valid = False
        self.raw = b""
        self.descriptor: DependencyDescriptor | None = None
        self.frame = 0  # extended frame number
        self.structure: DependencyStructure | None = None  # the structure the frame refers to
        self.structure_frame = -1  # extended frame number of that structure's keyframe
        self.publisher_mask = 0  # decode targets the publisher says it sends
        # Per packet, shared by the subscribers: rewritten descriptors by (frame number, mask),
        # and the rewritten packet tails by (extension mapping, descriptor) (svc_downtrack.py).
        self.descriptors: dict[tuple[int, int | None], bytes] = {}
        self.tails: dict[tuple[object, ...], tuple[int, bytes, bytes, int]] = {}


class DdReader:
    """The receive side of one stream's descriptors: structure, frame numbers, active targets."""

    __slots__ = ("errors", "highest", "mask", "structure", "structure_frame")

    def __init__(self) -> None:
        self.structure: DependencyStructure | None = None
        self.structure_frame = -1
        self.highest = -1  # highest extended frame number seen
        self.mask = 0
        self.errors = 0

    def read(self, raw: bytes, out: DdPacket) -> bool:
        out.valid = False
        if out.descriptors:
            out.descriptors.clear()
            out.tails.clear()
        try:
            dd = ddw.parse(raw, self.structure)
        except DdError:
            self.errors += 1
            return False
        frame = self._extend(dd.frame_number)
        if dd.structure is not None and dd.start_of_frame:
            self.structure = dd.structure
            self.structure_frame = frame
            self.mask = dd.structure.all_targets
        structure = self.structure
        if structure is None or frame < self.structure_frame:
            return False  # before the keyframe that defines the current structure
        if dd.active_decode_targets is not None:
            self.mask = dd.active_decode_targets
        out.raw = raw
        out.descriptor = dd
        out.frame = frame
        out.structure = structure
        out.structure_frame = self.structure_frame
        out.publisher_mask = self.mask
        out.valid = True
        return True

    def _extend(self, number: int) -> int:
        if self.highest < 0:
            self.highest = number
            return number
        delta = (number - self.highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        frame = self.highest + delta
        if frame > self.highest:
            self.highest = frame
        return frame


class DdSelector:
    """One subscriber's decode target on a stream with Dependency Descriptors.

    `select` sees every packet once and answers -1 (drop) or the marker bit to send; after a
    forwarded packet `descriptor_bytes` holds the descriptor to send with it."""

    __slots__ = (
        "chain_intact",
        "current",
        "decision_frame",
        "decision_layer",
        "decisions",
        "frame_offset",
        "last_frame_out",
        "limit",
        "mask_sent",
        "publisher_mask",
        "structure",
        "structure_frame",
        "tags",
        "target_spatial",
        "target_temporal",
        "unit",
    )

    def __init__(self) -> None:
        self.target_spatial = 0
        self.target_temporal = MAX_TEMPORAL
        self.limit = (0, MAX_TEMPORAL)  # the target as of the current temporal unit's start
        self.unit = -1  # RTP timestamp of the current temporal unit
        self.decisions = [_UNKNOWN] * _HISTORY
        self.tags = [-1] * _HISTORY
        self.frame_offset = 0  # added to frame numbers so they continue across restarts
        self.last_frame_out = -1  # last frame number sent (ours), -1 before any
        self.reset()

    def reset(self) -> None:
        """Wait for the next keyframe (a structure) before forwarding again."""
        self.structure_frame = -1
        self.structure: DependencyStructure | None = None  # the one frames are decided with
        self.publisher_mask = 0
        self.chain_intact: list[bool] = []
        self.current: tuple[int, int] | None = None  # layer of the decode target forwarded
        self.decision_frame = -1  # the frame the last decision was for
        self.decision_layer: tuple[int, int] | None = None  # its decode target, None: dropped
        self.mask_sent = False  # a bitmask narrower than the structure's was sent

    @property
    def started(self) -> bool:
        return self.current is not None

    def set_target(self, spatial: int, temporal: int = MAX_TEMPORAL) -> None:
        self.target_spatial = spatial
        self.target_temporal = temporal

    def needs_keyframe(self) -> bool:
        """Not started, or the decode target wanted cannot be reached: its chain is broken
        (going up; or going down in K-SVC, where the lower layers were not forwarded)."""
        structure = self.structure
        if self.current is None or structure is None:
            return True
        wanted = self._decode_target(
            structure,
            self.publisher_mask,
            chains=False,
            within=(self.target_spatial, self.target_temporal),
        )
        return wanted >= 0 and not self._chain_ok(structure, wanted)

    # -- per packet --------------------------------------------------------------------------
    def select(self, p: DdPacket, marker: int, timestamp: int) -> int:
        """`timestamp` (RTP) tells temporal units apart: a new target takes effect at the next
        one, so that every unit sent ends with exactly one marker."""
        if not p.valid:
            return -1
        dd = p.descriptor
        assert dd is not None
        if timestamp != self.unit:
            self.unit = timestamp
            self.limit = (self.target_spatial, self.target_temporal)
        if p.frame != self.decision_frame:
            self.decision_frame = p.frame
            known = self._decision(p.frame)
            if known == _UNKNOWN:  # the frame's first packet: decide for the whole frame
                self.decision_layer = self._decide(p, dd)
                self._remember(p.frame, self.decision_layer)
            else:  # a late packet of a frame decided before
                self.decision_layer = None if known == _DROPPED else _layer_of(known)
        layer = self.decision_layer
        if layer is None:
            return -1
        self.current = layer
        if dd.end_of_frame and dd.spatial_id == layer[0]:
            return 0x80  # the end of the highest spatial layer this subscriber gets
        return marker

    def descriptor_bytes(self, p: DdPacket) -> bytes:
        """The descriptor for this subscriber: frame number shifted, the decode targets it
        receives announced whenever they are fewer than the structure's."""
        dd, structure, layer = p.descriptor, p.structure, self.current
        assert dd is not None and structure is not None and layer is not None
        mask: int | None = structure.mask_up_to(*layer) & p.publisher_mask
        if dd.structure is not None:
            self.mask_sent = False
        if mask == structure.all_targets and not self.mask_sent:
            mask = None  # what the decoder assumes already
        elif mask != structure.all_targets:
            self.mask_sent = True
        number = (dd.frame_number + self.frame_offset) & 0xFFFF
        if self.last_frame_out < 0 or (number - self.last_frame_out) & 0xFFFF < 0x8000:
            self.last_frame_out = number  # the newest (a late packet is not)
        key = (number, mask)
        cached = p.descriptors.get(key)
        if cached is not None:
            return cached
        if mask is None and number == dd.frame_number and dd.active_decode_targets is None:
            out = p.raw
        else:
            copy = DependencyDescriptor(
                dd.start_of_frame,
                dd.end_of_frame,
                dd.template_id,
                number,
                dd.spatial_id,
                dd.temporal_id,
                dd.dtis,
                dd.fdiffs,
                dd.chain_diffs,
                dd.structure,
                mask,
                dd.custom_dtis,
                dd.custom_fdiffs,
                dd.custom_chains,
            )
            out = ddw.serialize(copy, structure)
        p.descriptors[key] = out
        return out

    # -- per frame ---------------------------------------------------------------------------
    def _decide(self, p: DdPacket, dd: DependencyDescriptor) -> tuple[int, int] | None:
        structure = p.structure
        assert structure is not None
        self.publisher_mask = p.publisher_mask
        if p.structure_frame != self.structure_frame:
            if p.frame != p.structure_frame:
                return None  # the structure changed at a keyframe we did not see begin
            self._adopt(p, structure)
        for chain, diff in enumerate(dd.chain_diffs):
            if chain >= len(self.chain_intact):
                break
            if diff == 0:
                self.chain_intact[chain] = True
            elif self.chain_intact[chain] and self._decision(p.frame - diff) == _DROPPED:
                self.chain_intact[chain] = False
        target = self._decode_target(structure, p.publisher_mask)
        if target < 0 and self.current is not None:
            # The target cannot start before a keyframe (asked for): keep what we forward.
            target = self._decode_target(structure, p.publisher_mask, within=self.current)
        # A structure attached off a frame's start may give the frame fewer targets: absent.
        if target < 0 or target >= len(dd.dtis) or dd.dtis[target] == ddw.NOT_PRESENT:
            return None
        for fdiff in dd.fdiffs:
            if self._decision(p.frame - fdiff) == _DROPPED:
                return None
        return structure.decode_target_layers[target]

    def _adopt(self, p: DdPacket, structure: DependencyStructure) -> None:
        """A keyframe with its structure: chains restart, frame numbers continue from ours."""
        self.structure_frame = p.structure_frame
        self.structure = structure
        self.chain_intact = [False] * structure.chain_count
        dd = p.descriptor
        assert dd is not None
        if self.last_frame_out >= 0:
            self.frame_offset = (self.last_frame_out + 1 - dd.frame_number) & 0xFFFF

    def _decode_target(
        self,
        structure: DependencyStructure,
        publisher_mask: int,
        *,
        chains: bool = True,
        within: tuple[int, int] | None = None,
    ) -> int:
        """The highest decode target within the target layer (or `within`) that the publisher
        sends (and whose chain is intact, with `chains`)."""
        top_spatial, top_temporal = within or self.limit
        for (spatial, temporal), target in structure.targets_high_first:
            if spatial > top_spatial or temporal > top_temporal:
                continue
            if not publisher_mask >> target & 1:
                continue
            if chains and not self._chain_ok(structure, target):
                continue
            return target
        return -1

    def _chain_ok(self, structure: DependencyStructure, target: int) -> bool:
        if not structure.chain_count:
            return True  # no chains: nothing says the target is broken
        chain = structure.protected_by[target]
        return chain < len(self.chain_intact) and self.chain_intact[chain]

    def _decision(self, frame: int) -> int:
        slot = frame & (_HISTORY - 1)
        return self.decisions[slot] if self.tags[slot] == frame else _UNKNOWN

    def _remember(self, frame: int, layer: tuple[int, int] | None) -> None:
        slot = frame & (_HISTORY - 1)
        self.tags[slot] = frame
        if layer is None:
            self.decisions[slot] = _DROPPED
        else:
            self.decisions[slot] = _FORWARDED + (layer[0] << 3 | layer[1])


def _layer_of(decision: int) -> tuple[int, int]:
    code = decision - _FORWARDED
    return code >> 3, code & 0x07
