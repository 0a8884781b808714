"""Room semantics: rooms, participants, tracks, subscriptions, and each participant's session.

From the bottom up (a module imports only those above it in this list, never below):

data_track_packet.py the `_data_track` packet header: read, patch the handle, build (no I/O)
data_track_gate.py    per-subscriber data-track flow control: whole frames or none (no I/O)
contracts.py          Protocols and plain data the others share (SignalSink, JoinOptions,
                      ParticipantSession, TrackSubscriber/TrackPublisher, Publication, Scheduler)
participant.py        a participant's state: the one source of truth API, signalling and
                      webhooks read
room.py               a room: settings, participants, events, data delivery
manager.py            RoomManager: create, find, update, close rooms; idle timeouts
data.py               DataExchange: data packets between participants, server-initiated RPC
admin.py              RoomAdmin: what the RoomService API does to live rooms and participants
data_tracks.py        DataTrackManager: data tracks, their subscriber handles, packet fan-out
tracks.py             TrackManager: AddTrackRequest → pending → published track records
speakers.py           SpeakerDetector: SpeakersChanged from audio levels
dynacast.py           Dynacast: which simulcast layers publishers should send
subscriber_peer.py    the subscriber PeerConnection: server offers, one section per track
publisher_peer.py     the publisher PeerConnection: client offers, sections matched to tracks
subscriptions.py      SubscriptionManager: who receives which track, permissions, layers
join_response.py      JoinResponse / ReconnectResponse builders
transport_manager.py  ParticipantTransports: a participant's PeerConnections and their taps
session.py            Session: one participant's lifecycle (join → active → resume → leave)
signal_handler.py     SignalHandler: every SignalRequest, dispatched to a typed handler
session_manager.py    SessionManager: validates joins, admits and resumes sessions, fan-out
"""
