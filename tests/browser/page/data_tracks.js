// Data-track helpers on top of harness.js (its room, record() and waiters), loaded by the
// data-track tests with page.add_script_tag after the harness: publish, push, subscribe and
// check frames with the official livekit-client API (docs/protocol/17-data-tracks.md §1).
//
// Frames carry their index: 4 bytes big-endian, then the index's low byte repeated up to the
// frame size, so a receiver can tell each frame and check that no byte changed on the way.
'use strict';

(() => {
  const LK = window.LivekitClient;
  const dt = {
    local: new Map(), // name -> LocalDataTrack
    pushers: new Map(), // name -> {stopped, pushed, errors, lastError}
    subs: new Map(), // "identity/name" -> {sid, frames: [...], done, error}
    requestResponses: [], // RequestResponses the signalling client received
  };
  window.rc.dt = dt;

  const room = () => {
    if (!window.rc.room) throw new Error('not joined: call join() first');
    return window.rc.room;
  };
  const poke = () => { for (const wake of [...waiters]) wake(); };

  function makePayload(index, size) {
    const payload = new Uint8Array(Math.max(size, 4)).fill(index & 0xff);
    new DataView(payload.buffer).setUint32(0, index);
    return payload;
  }

  function readPayload(payload) {
    const index = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(0);
    let intact = true;
    for (let i = 4; i < payload.byteLength; i += 1) {
      if (payload[i] !== (index & 0xff)) { intact = false; break; }
    }
    return { index, size: payload.byteLength, intact };
  }

  // Call once after join(): records data-track room events and the RequestResponses.
  window.dtWatch = () => {
    const r = room();
    const E = LK.RoomEvent;
    r.on(E.DataTrackPublished, (track) => record('DataTrackPublished', {
      identity: track.publisherIdentity, name: track.info.name, sid: track.info.sid,
    }));
    r.on(E.DataTrackUnpublished, (sid) => record('DataTrackUnpublished', { sid }));
    const client = r.engine.client;
    const previous = client.onRequestResponse;
    client.onRequestResponse = (response) => {
      const request = response.request || {};
      dt.requestResponses.push({
        reason: response.reason,
        message: response.message,
        request: request.case ?? null,
        pubHandle: request.value && request.value.pubHandle !== undefined
          ? request.value.pubHandle : null,
      });
      poke();
      if (previous) previous(response);
    };
  };

  // {ok, sid, name, pubHandle} or {ok: false, error: <DataTrackPublishErrorReason name>, raw}.
  window.dtPublish = async (name) => {
    try {
      const track = await room().localParticipant.publishDataTrack({ name });
      dt.local.set(name, track);
      return { ok: true, sid: track.info.sid, name: track.info.name, pubHandle: track.info.pubHandle };
    } catch (err) {
      return {
        ok: false,
        error: err.reasonName || err.name || 'unknown',
        message: String(err.message),
        raw: err.rawMessage ?? null,
      };
    }
  };

  // Pushes `count` frames of `size` bytes every `intervalMs` (from index `start`) in the
  // background, with userTimestamp = 1000000 + index.
  window.dtStartPush = (name, { size, intervalMs = 20, count = 1e9, start = 0 }) => {
    const track = dt.local.get(name);
    if (!track) throw new Error(`no local data track ${name}`);
    const pusher = { stopped: false, pushed: 0, errors: 0, lastError: null };
    dt.pushers.set(name, pusher);
    (async () => {
      for (let index = start; !pusher.stopped && pusher.pushed < count; index += 1) {
        try {
          track.tryPush({ payload: makePayload(index, size), userTimestamp: BigInt(1000000 + index) });
          pusher.pushed += 1;
        } catch (err) {
          pusher.errors += 1;
          pusher.lastError = String(err);
        }
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    })();
  };

  window.dtStopPush = (name) => {
    const pusher = dt.pushers.get(name);
    if (!pusher) return null;
    pusher.stopped = true;
    return { pushed: pusher.pushed, errors: pusher.errors, lastError: pusher.lastError };
  };

  window.dtUnpublish = async (name) => {
    window.dtStopPush(name);
    await dt.local.get(name).unpublish();
    dt.local.delete(name);
  };

  window.dtLocal = () => Array.from(dt.local.values()).map((t) => ({
    name: t.info.name, sid: t.info.sid, pubHandle: t.info.pubHandle, published: t.isPublished(),
  }));

  // The local track once the server answered its (re)publication with `sid`.
  window.dtWaitLocalSid = (name, sid, timeoutMs = 20000) => pollUntil(
    `local data track ${name} published as ${sid}`,
    async () => {
      const local = window.dtLocal().find((t) => t.name === name);
      return { ok: Boolean(local && local.sid === sid && local.published), value: local };
    },
    timeoutMs,
    20,
  );

  window.dtRemote = () => {
    const out = [];
    for (const p of room().remoteParticipants.values()) {
      for (const [name, track] of p.dataTracks.entries()) {
        out.push({ identity: p.identity, name, sid: track.info.sid });
      }
    }
    return out;
  };

  // Subscribes to `identity`'s track `name` (waiting for it to be published) and keeps
  // reading its frames in the background.
  window.dtSubscribe = async (identity, name, timeoutMs = 20000) => {
    const participant = await waitUntil(
      `participant ${identity}`, () => room().remoteParticipants.get(identity), timeoutMs,
    );
    const track = await waitUntil(
      `data track ${identity}/${name}`, () => participant.dataTracks.get(name), timeoutMs,
    );
    const sub = { sid: track.info.sid, frames: [], done: false, error: null };
    dt.subs.set(`${identity}/${name}`, sub);
    const reader = track.subscribe().getReader();
    sub.cancel = () => reader.cancel();
    (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const frame = readPayload(value.payload);
          frame.userTimestamp = value.userTimestamp === undefined ? null : Number(value.userTimestamp);
          sub.frames.push(frame);
          poke();
        }
        sub.done = true;
      } catch (err) {
        sub.error = String(err && (err.reasonName || err.message || err));
      }
      record('DataTrackStreamEnded', { identity, name, error: sub.error });
    })();
    return { sid: track.info.sid };
  };

  window.dtUnsubscribe = async (identity, name) => {
    const sub = dt.subs.get(`${identity}/${name}`);
    if (sub) await sub.cancel();
  };

  // Resolves once `count` frames arrived from identity/name (every one so far, summarised).
  window.dtWaitFrames = (identity, name, count, timeoutMs = 20000) => waitUntil(
    `${count} frames of data track ${identity}/${name}`,
    () => {
      const sub = dt.subs.get(`${identity}/${name}`);
      if (sub && sub.error) throw new Error(`subscription failed: ${sub.error}`);
      return sub && sub.frames.length >= count && window.dtFrames(identity, name);
    },
    timeoutMs,
  );

  window.dtFrames = (identity, name) => {
    const sub = dt.subs.get(`${identity}/${name}`);
    if (!sub) return null;
    return {
      sid: sub.sid,
      count: sub.frames.length,
      indices: sub.frames.map((f) => f.index),
      sizes: Array.from(new Set(sub.frames.map((f) => f.size))),
      intact: sub.frames.every((f) => f.intact),
      timestampsMatch: sub.frames.every((f) => f.userTimestamp === 1000000 + f.index),
      done: sub.done,
      error: sub.error,
    };
  };

  window.dtWaitStreamEnd = (identity, name, timeoutMs = 20000) => waitUntil(
    `the frame stream of ${identity}/${name} to end`,
    () => {
      const sub = dt.subs.get(`${identity}/${name}`);
      return sub && (sub.done || sub.error) && { done: sub.done, error: sub.error };
    },
    timeoutMs,
  );

  // The first recorded room event `event` whose details include every field of `match`.
  window.dtWaitEvent = (event, match = {}, timeoutMs = 20000) => waitUntil(
    `${event} ${JSON.stringify(match)}`,
    () => window.rc.events.find((e) => e.event === event
      && Object.entries(match).every(([k, v]) => e[k] === v)),
    timeoutMs,
  );

  // Raw signalling and packets through the client's own senders (the "bad handle" cases).
  window.dtSignalPublish = (pubHandle, name) => {
    room().engine.client.sendPublishDataTrackRequest(pubHandle, name, false);
  };

  window.dtWaitRequestResponse = (pubHandle, timeoutMs = 20000) => waitUntil(
    `a RequestResponse for handle ${pubHandle}`,
    () => dt.requestResponses.find((r) => r.pubHandle === pubHandle),
    timeoutMs,
  );

  // One packet (DataTrackPacket's own serialiser) with any handle, on the publisher channel.
  window.dtSendRawPacket = async (handle, frameNumber, text) => {
    const payload = new TextEncoder().encode(text);
    const bytes = new Uint8Array(12 + payload.byteLength);
    const view = new DataView(bytes.buffer);
    view.setUint8(0, 0x18); // version 0, a single-packet frame, no extensions
    view.setUint16(2, handle);
    view.setUint16(4, frameNumber);
    view.setUint16(6, frameNumber);
    view.setUint32(8, 90 * frameNumber);
    bytes.set(payload, 12);
    LK.DataTrackPacket.fromBinary(bytes); // throws if the client itself would reject it
    await room().engine.sendDataTrackFrame(bytes);
  };

  window.dtSimulate = async (scenario) => {
    await room().simulateScenario(scenario);
  };
})();
