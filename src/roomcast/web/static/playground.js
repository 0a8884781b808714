// Roomcast playground: join a room with camera and microphone, see everyone, chat, share the
// screen. Plain JS on the official livekit-client UMD bundle (window.LivekitClient).
import { $, describeMediaError, errorMessage, formatTime, initials } from './ui.js';

const LK = window.LivekitClient;
const { Room, RoomEvent, Track, DisconnectReason } = LK;

// LiveKit's chat topics (@livekit/components): text streams on "lk.chat", and the legacy
// JSON DataPacket {id, timestamp, message} on "lk-chat-topic" for older apps.
const CHAT_TOPIC = 'lk.chat';
const LEGACY_CHAT_TOPIC = 'lk-chat-topic';
const MIC_OFF_ICON = '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-5.9-.8L15 10.1V11l-.1.4 1.5 1.5c.4-.6.6-1.2.6-1.9h2a7 7 0 0 1-1.2 3.4l1.4 1.4-1.4 1.4L4.5 4 5.9 2.6l15.5 15.5-1.4 1.4-4-4A7 7 0 0 1 13 17v4h-2v-4a7 7 0 0 1-6-6h2a5 5 0 0 0 7.3 4.4l-1.6-1.6c-.2 0-.5.2-.7.2a3 3 0 0 1-3-3v-.8l2 2z"/></svg>';

const state = {
  config: { dev_tokens: false },
  room: null,
  preview: null, // LocalVideoTrack shown before joining
  tiles: new Map(), // key -> {el, video, track}
  seen: new Set(), // chat message keys (identity + id), for de-duplication
  unread: 0,
  leaving: false,
  renderQueued: false,
  lastError: null,
};
// For tests and curious users: window.playground.room is the livekit-client Room.
window.playground = state;

// ---------------------------------------------------------------------------------------------
// Pre-join
// ---------------------------------------------------------------------------------------------

function showJoinError(message) {
  state.lastError = message;
  const box = $('#join-error');
  box.textContent = message;
  box.hidden = !message;
}

function showJoinInfo(message) {
  const box = $('#join-info');
  box.textContent = message || '';
  box.hidden = !message;
}

function defaultServerUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
}

function mediaAvailable() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

async function loadConfig() {
  try {
    const response = await fetch('/playground/config', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.config = await response.json();
  } catch (err) {
    showJoinError(`Cannot reach the Roomcast server at ${location.host} (${errorMessage(err)}). Is \`roomcast serve\` running?`);
  }
  $('#dev-fields').hidden = !state.config.dev_tokens;
  $('#token-fields').hidden = state.config.dev_tokens;
}

function identityFor(name) {
  // One identity per tab (kept across reloads, so a reload replaces the old session).
  let suffix = sessionStorage.getItem('roomcast.identity-suffix');
  if (!suffix) {
    suffix = Math.random().toString(36).slice(2, 6);
    sessionStorage.setItem('roomcast.identity-suffix', suffix);
  }
  const slug = name.normalize('NFKD').replace(/[^\w-]+/g, '-').replace(/^-+|-+$/g, '').toLowerCase().slice(0, 40);
  return `${slug || 'guest'}-${suffix}`;
}

async function fillDeviceSelect(select, kind, selected) {
  let devices = [];
  try {
    devices = await Room.getLocalDevices(kind, false);
  } catch {
    devices = [];
  }
  select.replaceChildren();
  devices.forEach((device, index) => {
    const option = document.createElement('option');
    option.value = device.deviceId;
    option.textContent = device.label || `${kind === 'audioinput' ? 'Microphone' : kind === 'videoinput' ? 'Camera' : 'Speaker'} ${index + 1}`;
    select.append(option);
  });
  if (!devices.length) {
    const option = document.createElement('option');
    option.value = '';
    option.textContent = kind === 'audiooutput' ? 'System default' : 'None found';
    select.append(option);
  }
  if (selected && devices.some((d) => d.deviceId === selected)) select.value = selected;
  return devices;
}

async function refreshPrejoinDevices() {
  await fillDeviceSelect($('#cam-select'), 'videoinput', localStorage.getItem('roomcast.camera'));
  await fillDeviceSelect($('#mic-select'), 'audioinput', localStorage.getItem('roomcast.microphone'));
}

function stopPreview() {
  if (state.preview) {
    state.preview.detach();
    state.preview.stop();
    state.preview = null;
  }
  $('#preview-off').hidden = false;
}

async function startPreview() {
  stopPreview();
  if (!$('#cam-check').checked || !mediaAvailable()) return;
  const deviceId = $('#cam-select').value || undefined;
  try {
    const track = await LK.createLocalVideoTrack({ deviceId, resolution: LK.VideoPresets.h720.resolution });
    if (!$('#prejoin').hidden && $('#cam-check').checked) {
      state.preview = track;
      track.attach($('#preview'));
      $('#preview-off').hidden = true;
    } else {
      track.stop();
    }
  } catch (err) {
    $('#cam-check').checked = false;
    showJoinError(describeMediaError(err, 'camera'));
  }
}

async function requestPermissionsForLabels() {
  // Device names are only visible after a permission grant: ask once for both.
  if (!mediaAvailable()) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    stream.getTracks().forEach((t) => t.stop());
  } catch (err) {
    showJoinError(describeMediaError(err, 'camera and microphone'));
    $('#cam-check').checked = false;
    $('#mic-check').checked = false;
  }
}

async function initPrejoin() {
  const params = new URLSearchParams(location.search);
  $('#room-input').value = params.get('room') || localStorage.getItem('roomcast.room') || 'demo';
  $('#name-input').value = params.get('name') || localStorage.getItem('roomcast.name') || `Guest ${Math.floor(100 + Math.random() * 900)}`;
  $('#url-input').value = params.get('url') || defaultServerUrl();
  $('#token-input').value = params.get('token') || '';
  await loadConfig();
  if (!mediaAvailable()) {
    $('#cam-check').checked = false;
    $('#mic-check').checked = false;
    $('#cam-check').disabled = true;
    $('#mic-check').disabled = true;
    showJoinInfo('Camera and microphone need a secure page: open http://localhost:7880/ on this machine, '
      + 'or serve Roomcast over https. You can still join to watch and chat.');
    return;
  }
  await requestPermissionsForLabels();
  await refreshPrejoinDevices();
  await startPreview();
  navigator.mediaDevices.addEventListener('devicechange', () => {
    if (state.room) refreshCallDevices();
    else refreshPrejoinDevices();
  });
}

// JWT payload, decoded only to give early, clear errors (the server does the real checks).
function decodeToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('This does not look like an access token (a JWT has three parts separated by dots).');
  try {
    const json = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  } catch {
    throw new Error('This access token cannot be decoded: check that it was pasted completely.');
  }
}

async function obtainCredentials() {
  if (state.config.dev_tokens) {
    const roomName = $('#room-input').value.trim();
    const name = $('#name-input').value.trim();
    if (!roomName) throw new Error('Enter a room name.');
    if (!name) throw new Error('Enter your name.');
    localStorage.setItem('roomcast.room', roomName);
    localStorage.setItem('roomcast.name', name);
    const query = new URLSearchParams({ room: roomName, identity: identityFor(name), name });
    let response;
    try {
      response = await fetch(`/playground/token?${query}`, { cache: 'no-store' });
    } catch (err) {
      throw new Error(`Cannot reach the Roomcast server at ${location.host}: ${errorMessage(err)}. Is \`roomcast serve\` running?`);
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (response.status === 429) throw new Error(`Room is full: ${body.error || 'no more participants allowed'}.`);
      throw new Error(body.error || `The server could not issue a token (HTTP ${response.status}).`);
    }
    return { url: defaultServerUrl(), token: body.token, roomName };
  }
  const token = $('#token-input').value.trim();
  const url = $('#url-input').value.trim() || defaultServerUrl();
  if (!token) throw new Error('Paste an access token to join.');
  if (!/^wss?:\/\//.test(url)) throw new Error('The server URL must start with ws:// or wss://.');
  const claims = decodeToken(token);
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    throw new Error(`This token expired at ${new Date(claims.exp * 1000).toLocaleString()}: create a new one.`);
  }
  const video = claims.video || {};
  if (!video.roomJoin || !video.room) throw new Error('This token cannot join a room: it needs the roomJoin grant and a room name.');
  return { url, token, roomName: video.room };
}

function describeConnectError(err, url) {
  if (err && err.name === 'ConnectionError') {
    const detail = String(err.message || '').replace(/^could not establish signal connection: /, '');
    const R = LK.ConnectionErrorReason;
    if (err.status === 401) return `The server rejected the token: ${detail}`;
    if (err.status === 403) return `Not allowed to join: ${detail}`;
    if (err.status === 404 && err.reason === R.NotAllowed) {
      return `The room does not exist and this server does not create rooms on join: ${detail}`;
    }
    if (err.status === 429) return `Room is full: ${detail}`;
    switch (err.reason) {
      case R.NotAllowed:
        return `Not allowed to join: ${detail}`;
      case R.ServerUnreachable:
        return `Cannot reach the server at ${url}. Is \`roomcast serve\` running, and is the URL right?`;
      case R.LeaveRequest: {
        // A leave request during the join: Roomcast sends one (JOIN_FAILURE) for a full room.
        const name = DisconnectReason[err.context];
        if (!name || name === 'JOIN_FAILURE') {
          return 'The server refused to admit you: the room is full (room.max_participants), or the join failed.';
        }
        return `The server ended the join (${name}).`;
      }
      case R.Timeout:
        return `Timed out connecting to ${url}: is the WebRTC UDP port (7882 by default) reachable?`;
      case R.Cancelled:
        return '';
      default:
        return `Could not connect to ${url}: ${detail}`;
    }
  }
  return errorMessage(err);
}

async function join(event) {
  event.preventDefault();
  showJoinError('');
  const button = $('#join-button');
  button.disabled = true;
  button.textContent = 'Joining…';
  let credentials;
  try {
    credentials = await obtainCredentials();
  } catch (err) {
    showJoinError(errorMessage(err));
    button.disabled = false;
    button.textContent = 'Join room';
    return;
  }
  const room = new Room({
    adaptiveStream: true,
    dynacast: true,
    publishDefaults: { simulcast: true, videoCodec: 'vp8' },
    videoCaptureDefaults: { resolution: LK.VideoPresets.h720.resolution },
  });
  state.room = room;
  state.leaving = false;
  state.inCall = false;
  wireRoom(room);
  try {
    await room.connect(credentials.url, credentials.token);
  } catch (err) {
    state.room = null;
    room.disconnect();
    console.warn('connect failed', err);
    const message = describeConnectError(err, credentials.url);
    if (message) showJoinError(message);
    button.disabled = false;
    button.textContent = 'Join room';
    return;
  }
  const wantCamera = $('#cam-check').checked;
  const wantMic = $('#mic-check').checked;
  const cameraId = $('#cam-select').value;
  const micId = $('#mic-select').value;
  if (cameraId) localStorage.setItem('roomcast.camera', cameraId);
  if (micId) localStorage.setItem('roomcast.microphone', micId);
  stopPreview();
  state.inCall = true;
  enterCall(credentials.roomName);
  button.disabled = false;
  button.textContent = 'Join room';
  const problems = [];
  if (wantMic) {
    try {
      await room.localParticipant.setMicrophoneEnabled(true, micId ? { deviceId: micId } : undefined);
    } catch (err) {
      problems.push(describeMediaError(err, 'microphone'));
    }
  }
  if (wantCamera) {
    try {
      await room.localParticipant.setCameraEnabled(true, cameraId ? { deviceId: cameraId } : undefined);
    } catch (err) {
      problems.push(describeMediaError(err, 'camera'));
    }
  }
  if (problems.length) showCallAlert(problems.join(' '), 'error');
  await refreshCallDevices();
  updateControls();
  scheduleRender();
}

// ---------------------------------------------------------------------------------------------
// In the call
// ---------------------------------------------------------------------------------------------

function enterCall(roomName) {
  $('#prejoin').hidden = true;
  $('#call').hidden = false;
  const title = $('#room-title');
  title.textContent = `Room: ${roomName}`;
  title.hidden = false;
  if (state.config.dev_tokens) {
    const url = new URL(location.href);
    url.searchParams.set('room', roomName);
    history.replaceState(null, '', url);
  }
  document.title = `${roomName} · Roomcast`;
  $('#messages').replaceChildren(emptyChatNote());
  state.seen.clear();
  state.unread = 0;
  setChatOpen(!window.matchMedia('(max-width: 760px)').matches);
}

function leaveCall(message, kind = 'info') {
  for (const tile of state.tiles.values()) {
    if (tile.track) tile.track.detach(tile.video);
  }
  state.tiles.clear();
  $('#grid').replaceChildren();
  $('#audio-sink').replaceChildren();
  $('#call').hidden = true;
  $('#settings').hidden = true;
  $('#room-title').hidden = true;
  $('#prejoin').hidden = false;
  document.title = 'Roomcast playground';
  state.room = null;
  showCallAlert('');
  if (kind === 'error') showJoinError(message);
  else {
    showJoinError('');
    showJoinInfo(message);
  }
  startPreview();
}

function showCallAlert(message, kind = 'info') {
  const box = $('#call-alert');
  box.textContent = message || '';
  box.className = `alert call-alert ${kind}`;
  box.hidden = !message;
}

const DISCONNECT_MESSAGES = {
  DUPLICATE_IDENTITY: 'You joined this room again elsewhere with the same identity, so this tab was disconnected.',
  SERVER_SHUTDOWN: 'The server shut down.',
  PARTICIPANT_REMOVED: 'You were removed from the room by an admin.',
  ROOM_DELETED: 'The room was deleted by an admin.',
  ROOM_CLOSED: 'The room was closed.',
  JOIN_FAILURE: 'The server refused to admit you: the room is full (room.max_participants), or the join failed.',
  STATE_MISMATCH: 'The connection was lost and could not be resumed.',
  SIGNAL_CLOSE: 'The connection to the server was lost.',
  CONNECTION_TIMEOUT: 'The connection to the server timed out.',
};

function wireRoom(room) {
  const rerender = () => scheduleRender();
  for (const name of [
    RoomEvent.ParticipantConnected, RoomEvent.ParticipantDisconnected, RoomEvent.TrackSubscribed,
    RoomEvent.TrackUnsubscribed, RoomEvent.TrackMuted, RoomEvent.TrackUnmuted,
    RoomEvent.TrackPublished, RoomEvent.TrackUnpublished, RoomEvent.LocalTrackPublished,
    RoomEvent.LocalTrackUnpublished, RoomEvent.ActiveSpeakersChanged,
    RoomEvent.ParticipantNameChanged, RoomEvent.ConnectionQualityChanged,
  ]) {
    room.on(name, rerender);
  }
  room.on(RoomEvent.TrackMuted, updateControls);
  room.on(RoomEvent.TrackUnmuted, updateControls);
  room.on(RoomEvent.LocalTrackPublished, updateControls);
  room.on(RoomEvent.LocalTrackUnpublished, updateControls);
  room.on(RoomEvent.TrackSubscribed, (track) => {
    if (track.kind !== Track.Kind.Audio) return;
    const element = track.attach();
    element.dataset.sid = track.sid || '';
    $('#audio-sink').append(element);
  });
  room.on(RoomEvent.TrackUnsubscribed, (track) => {
    if (track.kind === Track.Kind.Audio) track.detach().forEach((el) => el.remove());
  });
  room.on(RoomEvent.AudioPlaybackStatusChanged, () => {
    $('#audio-button').hidden = room.canPlaybackAudio;
  });
  room.on(RoomEvent.MediaDevicesError, (err) => showCallAlert(describeMediaError(err, 'camera or microphone'), 'error'));
  room.on(RoomEvent.Reconnecting, () => showCallAlert('Connection lost, reconnecting…', 'warn'));
  room.on(RoomEvent.Reconnected, () => showCallAlert(''));
  room.on(RoomEvent.Disconnected, (reason) => {
    if (state.room !== room || !state.inCall) return;
    state.inCall = false;
    const name = DisconnectReason[reason] || '';
    if (state.leaving || name === 'CLIENT_INITIATED') {
      leaveCall('You left the room.');
    } else {
      leaveCall(DISCONNECT_MESSAGES[name] || `Disconnected from the server${name ? ` (${name})` : ''}.`, 'error');
    }
    state.disconnectReason = name;
  });
  room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
    if (topic !== LEGACY_CHAT_TOPIC) return;
    let message;
    try {
      message = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      return;
    }
    if (!message || typeof message.message !== 'string') return;
    addChatMessage({
      id: message.id, timestamp: message.timestamp, text: message.message, participant,
    });
  });
  room.registerTextStreamHandler(CHAT_TOPIC, async (reader, info) => {
    const text = await reader.readAll();
    addChatMessage({
      id: reader.info.id,
      timestamp: reader.info.timestamp,
      text,
      participant: room.getParticipantByIdentity(info.identity),
      identity: info.identity,
    });
  });
}

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    render();
  });
  // Hidden tabs get no animation frames: render anyway.
  setTimeout(() => {
    if (state.renderQueued) {
      state.renderQueued = false;
      render();
    }
  }, 250);
}

function makeTile(key, participant, source) {
  const el = document.createElement('div');
  el.className = `tile ${source === Track.Source.ScreenShare ? 'screen' : 'camera'}`;
  el.dataset.key = key;
  const video = document.createElement('video');
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  avatar.append(document.createElement('span'));
  const label = document.createElement('div');
  label.className = 'label';
  const dot = document.createElement('span');
  dot.className = 'speaking-dot';
  dot.title = 'Speaking';
  const mic = document.createElement('span');
  mic.className = 'mic-off';
  mic.title = 'Microphone muted';
  mic.innerHTML = MIC_OFF_ICON; // a constant
  const name = document.createElement('span');
  name.className = 'name';
  label.append(dot, mic, name);
  el.append(video, avatar, label);
  return { el, video, track: null };
}

function updateTile(tile, participant, source) {
  const isLocal = participant === state.room.localParticipant;
  const publication = participant.getTrackPublication(source);
  const track = publication ? publication.track : undefined;
  if (track !== tile.track) {
    if (tile.track) tile.track.detach(tile.video);
    if (track) track.attach(tile.video);
    tile.track = track || null;
  }
  const videoOn = Boolean(track) && !publication.isMuted;
  const mic = participant.getTrackPublication(Track.Source.Microphone);
  const micMuted = !mic || mic.isMuted;
  const isScreen = source === Track.Source.ScreenShare;
  const display = participant.name || participant.identity;
  const el = tile.el;
  el.classList.toggle('local', isLocal);
  el.classList.toggle('video-off', !videoOn);
  el.classList.toggle('mic-muted', !isScreen && micMuted);
  el.classList.toggle('speaking', !isScreen && participant.isSpeaking);
  el.dataset.identity = participant.identity;
  el.dataset.source = isScreen ? 'screen_share' : 'camera';
  el.dataset.videoOn = String(videoOn);
  el.dataset.micMuted = String(micMuted);
  el.dataset.speaking = String(participant.isSpeaking);
  const label = `${display}${isLocal ? ' (you)' : ''}${isScreen ? ' · screen' : ''}`;
  const nameEl = el.querySelector('.name');
  if (nameEl.textContent !== label) nameEl.textContent = label;
  el.title = label;
  const avatar = el.querySelector('.avatar span');
  const letters = initials(display);
  if (avatar.textContent !== letters) avatar.textContent = letters;
}

function render() {
  const room = state.room;
  if (!room) return;
  const participants = [room.localParticipant, ...room.remoteParticipants.values()];
  const wanted = [];
  for (const participant of participants) {
    const screen = participant.getTrackPublication(Track.Source.ScreenShare);
    if (screen && screen.track) wanted.push([participant, Track.Source.ScreenShare]);
  }
  for (const participant of participants) wanted.push([participant, Track.Source.Camera]);
  const grid = $('#grid');
  const keep = new Set();
  wanted.forEach(([participant, source], index) => {
    const key = `${participant.identity}\u0000${source}`;
    keep.add(key);
    let tile = state.tiles.get(key);
    if (!tile) {
      tile = makeTile(key, participant, source);
      state.tiles.set(key, tile);
    }
    updateTile(tile, participant, source);
    if (grid.children[index] !== tile.el) grid.insertBefore(tile.el, grid.children[index] || null);
  });
  for (const [key, tile] of state.tiles) {
    if (keep.has(key)) continue;
    if (tile.track) tile.track.detach(tile.video);
    tile.el.remove();
    state.tiles.delete(key);
  }
}

function updateControls() {
  const room = state.room;
  if (!room) return;
  const local = room.localParticipant;
  const micOn = local.isMicrophoneEnabled;
  const camOn = local.isCameraEnabled;
  const screenOn = local.isScreenShareEnabled;
  const mic = $('#mic-button');
  mic.textContent = micOn ? 'Mute' : 'Unmute';
  mic.setAttribute('aria-pressed', String(!micOn));
  const cam = $('#cam-button');
  cam.textContent = camOn ? 'Stop camera' : 'Start camera';
  cam.setAttribute('aria-pressed', String(!camOn));
  const screen = $('#screen-button');
  screen.textContent = screenOn ? 'Stop sharing' : 'Share screen';
  screen.hidden = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
  $('#screen-button').dataset.active = String(screenOn);
}

async function toggle(kind) {
  const room = state.room;
  if (!room) return;
  const local = room.localParticipant;
  try {
    if (kind === 'mic') {
      await local.setMicrophoneEnabled(!local.isMicrophoneEnabled);
    } else if (kind === 'camera') {
      await local.setCameraEnabled(!local.isCameraEnabled);
    } else {
      await local.setScreenShareEnabled(!local.isScreenShareEnabled, { audio: true });
    }
    showCallAlert('');
  } catch (err) {
    if (kind === 'screen' && err && err.name === 'NotAllowedError') {
      showCallAlert('Screen sharing was cancelled or blocked by the browser.', 'info');
    } else {
      showCallAlert(describeMediaError(err, kind === 'mic' ? 'microphone' : kind === 'camera' ? 'camera' : 'screen'), 'error');
    }
  }
  updateControls();
  scheduleRender();
}

async function refreshCallDevices() {
  const room = state.room;
  if (!room) return;
  await fillDeviceSelect($('#mic-switch'), 'audioinput', room.getActiveDevice('audioinput'));
  await fillDeviceSelect($('#cam-switch'), 'videoinput', room.getActiveDevice('videoinput'));
  const speakers = await fillDeviceSelect($('#speaker-switch'), 'audiooutput', room.getActiveDevice('audiooutput'));
  $('#speaker-field').hidden = !speakers.length || !('setSinkId' in HTMLMediaElement.prototype);
}

async function switchDevice(kind, select) {
  if (!state.room || !select.value) return;
  try {
    await state.room.switchActiveDevice(kind, select.value);
    if (kind === 'videoinput') localStorage.setItem('roomcast.camera', select.value);
    if (kind === 'audioinput') localStorage.setItem('roomcast.microphone', select.value);
  } catch (err) {
    showCallAlert(describeMediaError(err, kind === 'videoinput' ? 'camera' : 'microphone'), 'error');
  }
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

function emptyChatNote() {
  const li = document.createElement('li');
  li.className = 'empty';
  li.textContent = 'No messages yet. Messages use LiveKit\'s chat topic, so LiveKit Meet and other LiveKit apps in this room see them too.';
  return li;
}

function addChatMessage({ id, timestamp, text, participant, identity }) {
  const room = state.room;
  if (!room) return;
  const who = participant ? participant.identity : identity || '';
  const key = `${who}\u0000${id || Math.random()}`;
  if (state.seen.has(key)) return;
  state.seen.add(key);
  const mine = participant === room.localParticipant;
  const list = $('#messages');
  list.querySelector('.empty')?.remove();
  const li = document.createElement('li');
  li.className = mine ? 'mine' : 'theirs';
  li.dataset.from = who;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const name = document.createElement('b');
  name.textContent = mine ? 'You' : (participant && participant.name) || who || 'Server';
  meta.append(name, formatTime(typeof timestamp === 'number' ? timestamp : Date.now()));
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  li.append(meta, body);
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom || mine) list.scrollTop = list.scrollHeight;
  if (!mine && $('#call').classList.contains('chat-closed')) {
    state.unread += 1;
    const badge = $('#unread');
    badge.textContent = String(state.unread);
    badge.hidden = false;
  }
}

async function sendChat(event) {
  event.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  const room = state.room;
  if (!text || !room) return;
  input.value = '';
  let id = `${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;
  let streamed = false;
  try {
    const info = await room.localParticipant.sendText(text, { topic: CHAT_TOPIC });
    id = info.id;
    streamed = true;
  } catch (err) {
    console.warn('chat: text stream failed, sending the legacy packet only', err);
  }
  const timestamp = Date.now();
  addChatMessage({ id, timestamp, text, participant: room.localParticipant });
  // Legacy packet for older LiveKit apps; "ignoreLegacy" tells newer ones (which read the text
  // stream) to skip it, exactly as @livekit/components does.
  const legacy = { id, timestamp, message: text, ignoreLegacy: streamed };
  try {
    await room.localParticipant.publishData(new TextEncoder().encode(JSON.stringify(legacy)), {
      reliable: true,
      topic: LEGACY_CHAT_TOPIC,
    });
  } catch (err) {
    if (!streamed) showCallAlert(`Could not send the message: ${errorMessage(err)}`, 'error');
  }
}

function setChatOpen(open) {
  $('#call').classList.toggle('chat-closed', !open);
  $('#chat-button').setAttribute('aria-expanded', String(open));
  if (open) {
    state.unread = 0;
    $('#unread').hidden = true;
    const list = $('#messages');
    list.scrollTop = list.scrollHeight;
  }
}

// ---------------------------------------------------------------------------------------------

async function leave() {
  const room = state.room;
  if (!room) return;
  state.leaving = true;
  await room.disconnect();
}

function main() {
  $('#join-form').addEventListener('submit', join);
  $('#cam-check').addEventListener('change', startPreview);
  $('#cam-select').addEventListener('change', startPreview);
  $('#mic-button').addEventListener('click', () => toggle('mic'));
  $('#cam-button').addEventListener('click', () => toggle('camera'));
  $('#screen-button').addEventListener('click', () => toggle('screen'));
  $('#leave-button').addEventListener('click', leave);
  $('#chat-form').addEventListener('submit', sendChat);
  $('#chat-button').addEventListener('click', () => setChatOpen($('#call').classList.contains('chat-closed')));
  $('#chat-close').addEventListener('click', () => setChatOpen(false));
  $('#settings-button').addEventListener('click', () => {
    const panel = $('#settings');
    panel.hidden = !panel.hidden;
    $('#settings-button').setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) refreshCallDevices();
  });
  $('#mic-switch').addEventListener('change', (e) => switchDevice('audioinput', e.target));
  $('#cam-switch').addEventListener('change', (e) => switchDevice('videoinput', e.target));
  $('#speaker-switch').addEventListener('change', (e) => switchDevice('audiooutput', e.target));
  $('#audio-button').addEventListener('click', async () => {
    await state.room?.startAudio();
    $('#audio-button').hidden = Boolean(state.room?.canPlaybackAudio);
  });
  window.addEventListener('beforeunload', () => { state.room?.disconnect(); });
  state.ready = initPrejoin()
    .catch((err) => showJoinError(`The page could not start: ${errorMessage(err)}`))
    .finally(() => { state.initialized = true; });
}

if (!LK) {
  showJoinError('The livekit-client bundle did not load (static/vendor/livekit-client.umd.js).');
} else {
  main();
}
