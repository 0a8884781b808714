"""The Dependency Descriptor RTP header extension (AV1 RTP specification, appendix A): parse
and write, and the per-stream reader that keeps the template structure between packets.

A descriptor names the frame (`frame_number`), where the packet sits in it (start/end of
frame) and a template of the stream's *template dependency structure*, which a keyframe's first
packet carries: the spatial and temporal id of each template, its decode target indications
(DTIs), reference frame diffs (fdiffs) and chain diffs. A selective forwarder reads these to
keep decode targets (spatial x temporal layer combinations) decodable for each subscriber, and
rewrites `frame_number` and `active_decode_targets_bitmask` on the way out (§A.8.3).

Everything here is pure: bytes in, objects out, `DdError` for anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Decode target indications (§A.8.3.1, table A.1).
NOT_PRESENT = 0
DISCARDABLE = 1
SWITCH = 2
REQUIRED = 3

MAX_TEMPLATES = 64  # template ids are 6 bits
MAX_LAYER_ID = 7  # spatial and temporal ids fit 3 bits (AV1's OBU extension header)
MAX_DECODE_TARGETS = 32  # dt_cnt_minus_one is 5 bits


class DdError(ValueError):
    """A descriptor that cannot be read: truncated, or naming no known template."""


@dataclass(slots=True, frozen=True)
class FrameTemplate:
    """One frame dependency template (§A.8.2: template_layers, _dtis, _fdiffs, _chains)."""

    spatial_id: int
    temporal_id: int
    dtis: tuple[int, ...]
    fdiffs: tuple[int, ...]
    chain_diffs: tuple[int, ...]


@dataclass(slots=True)
class DependencyStructure:
    """template_dependency_structure() (§A.8.2) and what §A.8.3 derives from it."""

    template_id_offset: int
    decode_target_count: int
    templates: list[FrameTemplate]
    chain_count: int = 0
    protected_by: list[int] = field(default_factory=list)  # chain of each decode target
    resolutions: list[tuple[int, int]] | None = None  # (width, height) per spatial id
    # decode_target_layers(): (spatial, temporal) of each decode target.
    decode_target_layers: list[tuple[int, int]] = field(default_factory=list)
    # (layer, decode target), highest layer first: the order a forwarder tries them in.
    targets_high_first: list[tuple[tuple[int, int], int]] = field(
        default_factory=list, compare=False
    )
    _masks: dict[tuple[int, int], int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.decode_target_layers:
            self.decode_target_layers = [
                (
                    max((t.spatial_id for t in self.templates if t.dtis[dt]), default=0),
                    max((t.temporal_id for t in self.templates if t.dtis[dt]), default=0),
                )
                for dt in range(self.decode_target_count)
            ]
        self.targets_high_first = sorted(
            ((layer, dt) for dt, layer in enumerate(self.decode_target_layers)), reverse=True
        )

    @property
    def all_targets(self) -> int:
        return (1 << self.decode_target_count) - 1

    @property
    def max_spatial_id(self) -> int:
        return max((t.spatial_id for t in self.templates), default=0)

    def mask_up_to(self, spatial: int, temporal: int) -> int:
        """The decode targets whose layer is at most (spatial, temporal)."""
        mask = self._masks.get((spatial, temporal))
        if mask is None:
            mask = 0
            for dt, (s, t) in enumerate(self.decode_target_layers):
                if s <= spatial and t <= temporal:
                    mask |= 1 << dt
            self._masks[(spatial, temporal)] = mask
        return mask


@dataclass(slots=True)
class DependencyDescriptor:
    """One packet's descriptor with its frame's dependencies resolved (§A.8.3)."""

    start_of_frame: bool
    end_of_frame: bool
    template_id: int
    frame_number: int
    spatial_id: int = 0
    temporal_id: int = 0
    dtis: tuple[int, ...] = ()
    fdiffs: tuple[int, ...] = ()
    chain_diffs: tuple[int, ...] = ()
    structure: DependencyStructure | None = None  # attached to this packet (a keyframe's first)
    active_decode_targets: int | None = None  # the bitmask, when the packet carries one
    custom_dtis: bool = False
    custom_fdiffs: bool = False
    custom_chains: bool = False


# -- bits ------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("bits", "pos", "value")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.bits = 8 * len(data)
        self.pos = 0

    def f(self, n: int) -> int:
        """f(n): n bits, most significant first (§A.8.1)."""
        end = self.pos + n
        if end > self.bits:
            raise DdError("dependency descriptor is truncated")
        self.pos = end
        return (self.value >> (self.bits - end)) & ((1 << n) - 1)

    def ns(self, n: int) -> int:
        """ns(n): a non-symmetric unsigned value in [0, n) (§A.8.1)."""
        w = n.bit_length()
        m = (1 << w) - n
        v = self.f(w - 1)
        if v < m:
            return v
        return (v << 1) - m + self.f(1)


class _Writer:
    __slots__ = ("bits", "value")

    def __init__(self) -> None:
        self.value = 0
        self.bits = 0

    def f(self, n: int, v: int) -> None:
        self.value = (self.value << n) | (v & ((1 << n) - 1))
        self.bits += n

    def ns(self, n: int, v: int) -> None:
        w = n.bit_length()
        m = (1 << w) - n
        if v < m:
            self.f(w - 1, v)
        else:
            self.f(w - 1, (v + m) >> 1)
            self.f(1, (v + m) & 1)

    def to_bytes(self) -> bytes:
        pad = -self.bits % 8  # zero_padding
        return (self.value << pad).to_bytes((self.bits + pad) // 8, "big")


# -- parse -----------------------------------------------------------------------------------


def parse(data: bytes, structure: DependencyStructure | None) -> DependencyDescriptor:
    """dependency_descriptor(sz) (§A.8.1) against the latest structure (the packet's own if it
    carries one). Raises DdError."""
    if len(data) < 3:
        raise DdError("dependency descriptor shorter than its mandatory fields")
    b0 = data[0]
    dd = DependencyDescriptor(
        start_of_frame=bool(b0 & 0x80),
        end_of_frame=bool(b0 & 0x40),
        template_id=b0 & 0x3F,
        frame_number=(data[1] << 8) | data[2],
    )
    r: _Reader | None = None
    if len(data) > 3:
        r = _Reader(data)
        r.pos = 24
        attached = r.f(1)
        active_present = r.f(1)
        dd.custom_dtis = bool(r.f(1))
        dd.custom_fdiffs = bool(r.f(1))
        dd.custom_chains = bool(r.f(1))
        if attached:
            structure = dd.structure = _read_structure(r)
        if structure is None:
            raise DdError("dependency descriptor before any template structure")
        if active_present:
            dd.active_decode_targets = r.f(structure.decode_target_count)
    if structure is None:
        raise DdError("dependency descriptor before any template structure")
    index = (dd.template_id + MAX_TEMPLATES - structure.template_id_offset) % MAX_TEMPLATES
    if index >= len(structure.templates):
        raise DdError(f"dependency descriptor names unknown template {dd.template_id}")
    template = structure.templates[index]
    dd.spatial_id, dd.temporal_id = template.spatial_id, template.temporal_id
    dd.dtis, dd.fdiffs, dd.chain_diffs = template.dtis, template.fdiffs, template.chain_diffs
    if r is not None:
        if dd.custom_dtis:
            dd.dtis = tuple(r.f(2) for _ in range(structure.decode_target_count))
        if dd.custom_fdiffs:
            fdiffs = []
            size = r.f(2)
            while size:
                fdiffs.append(r.f(4 * size) + 1)
                size = r.f(2)
            dd.fdiffs = tuple(fdiffs)
        if dd.custom_chains:
            dd.chain_diffs = tuple(r.f(8) for _ in range(structure.chain_count))
    return dd


def _read_structure(r: _Reader) -> DependencyStructure:
    offset = r.f(6)
    dt_count = r.f(5) + 1
    layers: list[tuple[int, int]] = []  # template_layers()
    spatial = temporal = 0
    while True:
        if len(layers) >= MAX_TEMPLATES:
            raise DdError("too many templates")
        if spatial > MAX_LAYER_ID or temporal > MAX_LAYER_ID:
            raise DdError("layer ids above 7")
        layers.append((spatial, temporal))
        idc = r.f(2)
        if idc == 1:
            temporal += 1
        elif idc == 2:
            spatial, temporal = spatial + 1, 0
        elif idc == 3:
            break
    dtis = [tuple(r.f(2) for _ in range(dt_count)) for _ in layers]  # template_dtis()
    fdiffs = []  # template_fdiffs()
    for _ in layers:
        diffs = []
        while r.f(1):
            diffs.append(r.f(4) + 1)
        fdiffs.append(tuple(diffs))
    chain_count = r.ns(dt_count + 1)  # template_chains()
    protected_by: list[int] = []
    chains: list[tuple[int, ...]] = [() for _ in layers]
    if chain_count:
        protected_by = [r.ns(chain_count) for _ in range(dt_count)]
        chains = [tuple(r.f(4) for _ in range(chain_count)) for _ in layers]
    resolutions = None
    if r.f(1):  # resolutions_present_flag: render_resolutions()
        resolutions = [(r.f(16) + 1, r.f(16) + 1) for _ in range(layers[-1][0] + 1)]
    templates = [
        FrameTemplate(s, t, dtis[i], fdiffs[i], chains[i]) for i, (s, t) in enumerate(layers)
    ]
    return DependencyStructure(offset, dt_count, templates, chain_count, protected_by, resolutions)


# -- write -----------------------------------------------------------------------------------


def serialize(dd: DependencyDescriptor, structure: DependencyStructure) -> bytes:
    """The descriptor's bytes: mandatory fields only when nothing else is needed, else the
    extended fields (§A.8.1). `structure` is the one the frame refers to; it is written only when
    `dd.structure` is set."""
    w = _Writer()
    w.f(1, dd.start_of_frame)
    w.f(1, dd.end_of_frame)
    w.f(6, dd.template_id)
    w.f(16, dd.frame_number)
    attached = dd.structure is not None
    mask = dd.active_decode_targets
    if attached and mask == structure.all_targets:
        mask = None  # implied by the structure
    if not (attached or mask is not None or dd.custom_dtis or dd.custom_fdiffs or dd.custom_chains):
        return w.to_bytes()
    w.f(1, attached)
    w.f(1, mask is not None)
    w.f(1, dd.custom_dtis)
    w.f(1, dd.custom_fdiffs)
    w.f(1, dd.custom_chains)
    if attached:
        _write_structure(w, structure)
    if mask is not None:
        w.f(structure.decode_target_count, mask)
    if dd.custom_dtis:
        for dti in dd.dtis:
            w.f(2, dti)
    if dd.custom_fdiffs:
        for fdiff in dd.fdiffs:
            size = max(1, ((fdiff - 1).bit_length() + 3) // 4)
            w.f(2, size)
            w.f(4 * size, fdiff - 1)
        w.f(2, 0)
    if dd.custom_chains:
        for diff in dd.chain_diffs:
            w.f(8, diff)
    return w.to_bytes()


def _write_structure(w: _Writer, s: DependencyStructure) -> None:
    w.f(6, s.template_id_offset)
    w.f(5, s.decode_target_count - 1)
    templates = s.templates
    for i, template in enumerate(templates):
        if i + 1 == len(templates):
            w.f(2, 3)
        else:
            following = templates[i + 1]
            if following.spatial_id > template.spatial_id:
                w.f(2, 2)
            elif following.temporal_id > template.temporal_id:
                w.f(2, 1)
            else:
                w.f(2, 0)
    for template in templates:
        for dti in template.dtis:
            w.f(2, dti)
    for template in templates:
        for fdiff in template.fdiffs:
            w.f(1, 1)
            w.f(4, fdiff - 1)
        w.f(1, 0)
    w.ns(s.decode_target_count + 1, s.chain_count)
    if s.chain_count:
        for chain in s.protected_by:
            w.ns(s.chain_count, chain)
        for template in templates:
            for diff in template.chain_diffs:
                w.f(4, diff)
    w.f(1, s.resolutions is not None)
    for width, height in s.resolutions or ():
        w.f(16, width - 1)
        w.f(16, height - 1)
