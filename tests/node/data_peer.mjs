// A Node participant for the Python tests: joins with @livekit/rtc-node, reports events as
// JSON lines on stdout, sends one data packet to PEER once it is in the room, publishes a
// sine (microphone) and reports the first audible frame of each audio track it subscribes to,
// exits on "quit". SIGNALLING "v0" forces the /rtc path (singlePeerConnection: false, a
// RoomOptions field the FFI takes); otherwise the SDK joins as it does by default (/rtc/v1).
import {
  AudioFrame,
  AudioSource,
  AudioStream,
  LocalAudioTrack,
  Room,
  RoomEvent,
  TrackKind,
  TrackPublishOptions,
  TrackSource,
  dispose,
} from '@livekit/rtc-node';
import readline from 'node:readline';

const [url, token, peer, signalling = 'v1'] = process.argv.slice(2);
const report = (event) => console.log(JSON.stringify(event));
const room = new Room();
let sent = false;

async function greet() {
  if (sent || !room.remoteParticipants.has(peer)) return;
  sent = true;
  await room.localParticipant.publishData(new TextEncoder().encode('hello from node'), {
    reliable: true,
    topic: 'node',
  });
  report({ event: 'sent' });
}

async function listen(track, identity) {
  const stream = new AudioStream(track, { sampleRate: 48000, numChannels: 1 });
  let frames = 0;
  for await (const frame of stream) {
    frames += 1;
    if (frame.data.some((sample) => sample !== 0)) {
      report({ event: 'audio_heard', from: identity, frames });
      break;
    }
  }
}

async function publishSine() {
  const source = new AudioSource(48000, 1);
  const track = LocalAudioTrack.createAudioTrack('node-sine', source);
  const options = new TrackPublishOptions({ source: TrackSource.SOURCE_MICROPHONE });
  await room.localParticipant.publishTrack(track, options);
  report({ event: 'published' });
  let n = 0;
  for (;;) {
    const samples = new Int16Array(480);
    for (let i = 0; i < samples.length; i += 1, n += 1) {
      samples[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * n) / 48000));
    }
    await source.captureFrame(new AudioFrame(samples, 48000, 1, samples.length));
  }
}

room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
  report({
    event: 'data',
    from: participant?.identity ?? null,
    topic: topic ?? null,
    text: new TextDecoder().decode(payload),
  });
});
room.on(RoomEvent.ParticipantConnected, (participant) => {
  report({ event: 'participant_connected', identity: participant.identity });
  greet().catch((err) => report({ event: 'error', message: String(err) }));
});
room.on(RoomEvent.TrackSubscribed, (track, publication, participant) => {
  report({ event: 'track_subscribed', from: participant.identity, sid: publication.sid });
  if (track.kind === TrackKind.KIND_AUDIO) {
    listen(track, participant.identity).catch((err) => report({ event: 'error', message: String(err) }));
  }
});
room.on(RoomEvent.Disconnected, (reason) => report({ event: 'disconnected', reason }));

const options = { autoSubscribe: true, dynacast: false };
if (signalling === 'v0') options.singlePeerConnection = false;
await room.connect(url, token, options);
report({ event: 'connected', sid: room.localParticipant.sid, identity: room.localParticipant.identity });
await greet();
publishSine().catch((err) => report({ event: 'error', message: String(err) }));

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === 'quit') break;
}
await room.disconnect();
await dispose();
report({ event: 'closed' });
process.exit(0);
