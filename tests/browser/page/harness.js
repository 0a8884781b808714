// Test harness around the official livekit-client (the UMD build from tests/node/node_modules,
// served as-is). The Python tests call these functions through page.evaluate(); every one
// returns plain JSON-able values, and every wait has a timeout and rejects with what it saw.
'use strict';

const LK = window.LivekitClient;
const state = {
  room: null,
  data: [], // every DataReceived packet: {text, from, topic, kind}
  events: [], // room events in order, for failure messages
  disconnectReason: null,
};
window.rc = state;

// Waiters re-check their condition whenever a room event arrives.
const waiters = new Set();
function record(event, details = {}) {
  state.events.push({ event, t: Math.round(performance.now()), ...details });
  for (const poke of [...waiters]) poke();
}

function waitUntil(what, check, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    let timer = null;
    const finish = () => { waiters.delete(poke); clearTimeout(timer); };
    function poke() {
      let value;
      try { value = check(); } catch (err) { finish(); reject(err); return; }
      if (value) { finish(); resolve(value); }
    }
    timer = setTimeout(() => {
      finish();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; `
        + `last events: ${JSON.stringify(state.events.slice(-15))}`));
    }, timeoutMs);
    waiters.add(poke);
    poke();
  });
}

// For conditions with no event of their own (getStats counters): check every `everyMs`.
async function pollUntil(what, check, timeoutMs = 20000, everyMs = 100) {
  const deadline = performance.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last && last.ok) return last.value;
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; `
        + `last seen: ${JSON.stringify(last && last.value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

function room() {
  if (!state.room) throw new Error('not joined: call join() first');
  return state.room;
}

function trackInfo(pub) {
  return {
    sid: pub.trackSid,
    kind: pub.kind,
    source: pub.source,
    name: pub.trackName,
    muted: pub.isMuted,
    simulcasted: Boolean(pub.simulcasted),
    subscribed: Boolean(pub.track),
    width: pub.dimensions ? pub.dimensions.width : 0,
    height: pub.dimensions ? pub.dimensions.height : 0,
  };
}

// join(url, token, {publish: {camera, microphone, simulcast, videoCodec}, roomOptions})
window.join = async (url, token, opts = {}) => {
  if (state.room) throw new Error('already joined');
  const r = new LK.Room({ adaptiveStream: false, dynacast: false, ...(opts.roomOptions || {}) });
  state.room = r;
  const E = LK.RoomEvent;
  r.on(E.DataReceived, (payload, participant, kind, topic) => {
    const packet = {
      text: new TextDecoder().decode(payload),
      from: participant ? participant.identity : null,
      topic: topic ?? null,
      kind: kind === LK.DataPacket_Kind.LOSSY ? 'lossy' : 'reliable',
    };
    state.data.push(packet);
    record('DataReceived', packet);
  });
  r.on(E.ParticipantConnected, (p) => record('ParticipantConnected', { identity: p.identity }));
  r.on(E.ParticipantDisconnected, (p) => record('ParticipantDisconnected', { identity: p.identity }));
  r.on(E.TrackPublished, (pub, p) => record('TrackPublished', { identity: p.identity, kind: pub.kind }));
  r.on(E.TrackSubscribed, (track, pub, p) => {
    // Attach to an element so Chrome plays it out as a real page would. Audio stays unmuted
    // (the autoplay policy flag allows it): a muted element sets the receiver's output gain
    // to 0, and its audioLevel/totalAudioEnergy stats with it.
    const element = track.attach();
    element.muted = track.kind !== 'audio';
    element.dataset.identity = p.identity;
    element.dataset.kind = track.kind;
    document.getElementById('media').appendChild(element);
    record('TrackSubscribed', { identity: p.identity, kind: track.kind, sid: pub.trackSid });
  });
  r.on(E.TrackUnsubscribed, (track, pub, p) => {
    track.detach().forEach((element) => element.remove());
    record('TrackUnsubscribed', { identity: p.identity, kind: track.kind, sid: pub.trackSid });
  });
  r.on(E.TrackSubscriptionFailed, (sid, p, reason) =>
    record('TrackSubscriptionFailed', { identity: p.identity, sid, reason: String(reason) }));
  r.on(E.ConnectionStateChanged, (s) => record('ConnectionStateChanged', { state: s }));
  r.on(E.Reconnecting, () => record('Reconnecting'));
  r.on(E.Reconnected, () => record('Reconnected'));
  r.on(E.Disconnected, (reason) => {
    state.disconnectReason = reason ?? null;
    record('Disconnected', { reason: reason ?? null });
  });

  const started = performance.now();
  await r.connect(url, token);
  const connectMs = Math.round(performance.now() - started);
  const publish = opts.publish || {};
  if (publish.camera) {
    await r.localParticipant.setCameraEnabled(
      true,
      { resolution: LK.VideoPresets.h720.resolution },
      { simulcast: publish.simulcast !== false, videoCodec: publish.videoCodec || 'vp8' },
    );
  }
  if (publish.microphone) await r.localParticipant.setMicrophoneEnabled(true);
  return {
    sid: r.localParticipant.sid,
    identity: r.localParticipant.identity,
    room: r.name,
    connectMs,
    published: window.localTracks(),
  };
};

window.publishData = async (text, topic, opts = {}) => {
  await room().localParticipant.publishData(new TextEncoder().encode(text), {
    reliable: opts.reliable !== false,
    topic: topic ?? undefined,
    destinationIdentities: opts.destinationIdentities,
  });
};

// Resolves with the first packet (already received or still to come) matching every given field.
window.waitForData = (match = {}, timeoutMs = 20000) => waitUntil(
  `DataReceived ${JSON.stringify(match)}`,
  () => state.data.find((d) => Object.entries(match).every(([k, v]) => d[k] === v)),
  timeoutMs,
);

window.localTracks = () => Array.from(room().localParticipant.trackPublications.values())
  .map(trackInfo);

window.remoteParticipants = () => Array.from(room().remoteParticipants.values()).map((p) => ({
  identity: p.identity,
  sid: p.sid,
  name: p.name,
  tracks: Array.from(p.trackPublications.values()).map(trackInfo),
}));

window.waitForParticipant = (identity, timeoutMs = 20000) => waitUntil(
  `participant ${identity}`,
  () => window.remoteParticipants().find((p) => p.identity === identity),
  timeoutMs,
);

window.waitForParticipantGone = (identity, timeoutMs = 20000) => waitUntil(
  `participant ${identity} to leave`,
  () => !window.remoteParticipants().some((p) => p.identity === identity),
  timeoutMs,
);

// Resolves with the remote participant once it has subscribed tracks of every given kind.
window.waitForTracks = (identity, kinds, timeoutMs = 20000) => waitUntil(
  `${kinds.join('+')} tracks of ${identity}`,
  () => {
    const p = window.remoteParticipants().find((q) => q.identity === identity);
    return p && kinds.every((k) => p.tracks.some((t) => t.kind === k && t.subscribed)) && p;
  },
  timeoutMs,
);

// Inbound RTP per subscribed remote track, from that track's RTCRtpReceiver.
window.getStats = async () => {
  const out = { video: [], audio: [] };
  for (const p of room().remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      const track = pub.track;
      if (!track || !track.receiver) continue;
      const report = await track.receiver.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        const base = {
          identity: p.identity,
          trackSid: pub.trackSid,
          packetsReceived: s.packetsReceived || 0,
          packetsLost: s.packetsLost || 0,
          bytesReceived: s.bytesReceived || 0,
        };
        if (s.kind === 'video') {
          out.video.push({
            ...base,
            framesDecoded: s.framesDecoded || 0,
            framesReceived: s.framesReceived || 0,
            keyFramesDecoded: s.keyFramesDecoded || 0,
            frameWidth: s.frameWidth || 0,
            frameHeight: s.frameHeight || 0,
            framesPerSecond: s.framesPerSecond || 0,
            pliCount: s.pliCount || 0,
            decoderImplementation: s.decoderImplementation || null,
          });
        } else if (s.kind === 'audio') {
          out.audio.push({
            ...base,
            totalSamplesReceived: s.totalSamplesReceived || 0,
            concealedSamples: s.concealedSamples || 0,
            audioLevel: s.audioLevel || 0,
            totalAudioEnergy: s.totalAudioEnergy || 0,
          });
        }
      });
    }
  }
  return out;
};

// Resolves with getStats() once the tracks from `identity` reach every given minimum:
// {framesDecoded, frameWidth, totalSamplesReceived, totalAudioEnergy} (omitted = not checked).
window.waitForInbound = (identity, min = {}, timeoutMs = 20000) => pollUntil(
  `inbound media from ${identity} reaching ${JSON.stringify(min)}`,
  async () => {
    const stats = await window.getStats();
    const video = stats.video.filter((s) => s.identity === identity);
    const audio = stats.audio.filter((s) => s.identity === identity);
    const atLeast = (list, key) => min[key] === undefined
      || list.some((s) => s[key] >= min[key]);
    const ok = atLeast(video, 'framesDecoded') && atLeast(video, 'frameWidth')
      && atLeast(audio, 'totalSamplesReceived') && atLeast(audio, 'totalAudioEnergy');
    return { ok, value: stats };
  },
  timeoutMs,
);

// What the browser is actually sending per simulcast layer (rid, or 'single').
window.outboundVideoLayers = async () => {
  const layers = {};
  for (const pub of room().localParticipant.trackPublications.values()) {
    const track = pub.track;
    if (!track || track.kind !== 'video' || !track.sender) continue;
    const report = await track.sender.getStats();
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      layers[s.rid || 'single'] = {
        framesSent: s.framesSent || 0,
        frameWidth: s.frameWidth || 0,
        frameHeight: s.frameHeight || 0,
        qualityLimitationReason: s.qualityLimitationReason || null,
      };
    });
  }
  return layers;
};

window.waitForOutboundLayer = (rid, timeoutMs = 20000) => pollUntil(
  `outbound simulcast layer ${rid} sending frames`,
  async () => {
    const layers = await window.outboundVideoLayers();
    return { ok: Boolean(layers[rid] && layers[rid].framesSent > 0), value: layers };
  },
  timeoutMs,
);

window.leave = async () => {
  await room().disconnect();
  return state.disconnectReason;
};

window.harnessReady = true;
