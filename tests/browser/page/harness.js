// Test harness around the official livekit-client: the Python tests call these through
// page.evaluate(). Everything returns plain JSON-able values.
const LK = window.LivekitClient;
const state = { room: null, data: [], disconnectReason: null, subscribed: [] };
window.rc = state;

window.join = async (url, token, opts = {}) => {
  const room = new LK.Room({ adaptiveStream: false, dynacast: false });
  state.room = room;
  room.on(LK.RoomEvent.DataReceived, (payload, participant, kind, topic) => {
    state.data.push({
      text: new TextDecoder().decode(payload),
      from: participant ? participant.identity : null,
      topic: topic ?? null,
    });
  });
  room.on(LK.RoomEvent.Disconnected, (reason) => { state.disconnectReason = reason ?? null; });
  room.on(LK.RoomEvent.TrackSubscribed, (track, pub, participant) => {
    const element = track.attach();
    element.muted = true; // autoplay without a gesture
    element.dataset.identity = participant.identity;
    element.dataset.kind = track.kind;
    document.getElementById('media').appendChild(element);
    state.subscribed.push({ identity: participant.identity, kind: track.kind, sid: pub.trackSid });
  });
  await room.connect(url, token);
  if (opts.camera || opts.microphone) {
    if (opts.camera) {
      await room.localParticipant.setCameraEnabled(true, { resolution: LK.VideoPresets.h720.resolution },
        { simulcast: opts.simulcast !== false, videoCodec: opts.codec || 'vp8' });
    }
    if (opts.microphone) await room.localParticipant.setMicrophoneEnabled(true);
  }
  return { sid: room.localParticipant.sid, identity: room.localParticipant.identity };
};

window.publishData = async (text, topic, reliable = true) => {
  await state.room.localParticipant.publishData(new TextEncoder().encode(text), { reliable, topic });
};

window.remoteIdentities = () => Array.from(state.room.remoteParticipants.values()).map((p) => p.identity);

window.localTracks = () => Array.from(state.room.localParticipant.trackPublications.values())
  .map((p) => ({ sid: p.trackSid, kind: p.kind, source: p.source }));

// Inbound RTP totals from the subscriber PeerConnection, per kind.
window.inboundStats = async () => {
  const totals = { video: { framesDecoded: 0, frameWidth: 0, frameHeight: 0 },
                   audio: { totalSamplesReceived: 0, packetsReceived: 0 } };
  for (const pub of state.room.remoteParticipants.values()) {
    for (const trackPub of pub.trackPublications.values()) {
      const track = trackPub.track;
      if (!track || !track.receiver) continue;
      const report = await track.receiver.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          totals.video.framesDecoded += s.framesDecoded || 0;
          totals.video.frameWidth = Math.max(totals.video.frameWidth, s.frameWidth || 0);
          totals.video.frameHeight = Math.max(totals.video.frameHeight, s.frameHeight || 0);
        } else if (s.kind === 'audio') {
          totals.audio.totalSamplesReceived += s.totalSamplesReceived || 0;
          totals.audio.packetsReceived += s.packetsReceived || 0;
        }
      });
    }
  }
  return totals;
};

// Outbound simulcast layers the browser is actually sending (rid -> frames sent).
window.outboundLayers = async () => {
  const layers = {};
  for (const pub of state.room.localParticipant.trackPublications.values()) {
    const track = pub.track;
    if (!track || track.kind !== 'video' || !track.sender) continue;
    const report = await track.sender.getStats();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') layers[s.rid || 'single'] = s.framesSent || 0;
    });
  }
  return layers;
};

window.leave = async () => { await state.room.disconnect(); };
