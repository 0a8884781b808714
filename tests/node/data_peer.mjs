// A Node participant for the Python tests: joins with @livekit/rtc-node, reports events as
// JSON lines on stdout, sends one data packet to PEER once it is in the room, exits on "quit".
import { Room, RoomEvent, dispose } from '@livekit/rtc-node';
import readline from 'node:readline';

const [url, token, peer] = process.argv.slice(2);
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
room.on(RoomEvent.Disconnected, (reason) => report({ event: 'disconnected', reason }));

await room.connect(url, token, { autoSubscribe: true, dynacast: false });
report({ event: 'connected', sid: room.localParticipant.sid, identity: room.localParticipant.identity });
await greet();

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === 'quit') break;
}
await room.disconnect();
await dispose();
report({ event: 'closed' });
process.exit(0);
