"""Domain errors that users can act on; the edge maps each to a Twirp code or HTTP status once."""


class RoomcastError(Exception):
    """Base class; ``code`` is the Twirp error code the edge reports."""

    code = "internal"


class InvalidArgumentError(RoomcastError):
    code = "invalid_argument"


class NotFoundError(RoomcastError):
    code = "not_found"


class RoomNotFoundError(NotFoundError):
    def __init__(self, room: str) -> None:
        super().__init__("requested room does not exist")
        self.room = room


class ParticipantNotFoundError(NotFoundError):
    def __init__(self, room: str, identity: str) -> None:
        super().__init__("participant does not exist")
        self.room = room
        self.identity = identity


class TrackNotFoundError(NotFoundError):
    def __init__(self, track_sid: str) -> None:
        super().__init__("track is not found")
        self.track_sid = track_sid


class PermissionDeniedError(RoomcastError):
    code = "unauthenticated"

    def __init__(self, message: str = "permissions denied") -> None:
        super().__init__(message)


class FailedPreconditionError(RoomcastError):
    code = "failed_precondition"


class RoomFullError(RoomcastError):
    code = "resource_exhausted"

    def __init__(self, room: str, max_participants: int) -> None:
        super().__init__(f"room {room!r} is full ({max_participants} participants)")
        self.room = room
        self.max_participants = max_participants


class UnavailableError(RoomcastError):
    code = "unavailable"


class UnimplementedError(RoomcastError):
    code = "unimplemented"


class DeadlineExceededError(RoomcastError):
    code = "deadline_exceeded"


class ResourceExhaustedError(RoomcastError):
    code = "resource_exhausted"
