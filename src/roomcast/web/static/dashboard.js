// Roomcast dashboard: live rooms, participants and tracks from GET /stats (every 2 s), and
// actions through the RoomService Twirp API. Both need an admin token; nothing is cached
// server-side for the page, so the dashboard always shows the server's own state.
import { $, errorMessage, formatTime, h } from './ui.js';
import { clearCharts, initCharts, updateCharts } from './dashboard-charts.js';

const TOKEN_KEY = 'roomcast.admin-token';
const DEV_KEY = 'roomcast.admin-dev';
const REFRESH_MS = 2000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  dev: sessionStorage.getItem(DEV_KEY) === '1',
  devAvailable: false,
  devTokens: new Map(), // room ('' = no room) -> {token, exp}
  timer: null,
  inFlight: false,
  lastOk: 0,
  data: null,
};
window.dashboard = state; // for tests and the curious

class HttpError extends Error {
  constructor(status, message, code = '') {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function describeGrants(claims) {
  if (!claims) return '';
  const video = claims.video || {};
  const grants = [];
  if (video.roomList) grants.push('roomList');
  if (video.roomCreate) grants.push('roomCreate');
  if (video.roomAdmin) grants.push(video.room ? `roomAdmin (${video.room})` : 'roomAdmin');
  let text = `Token: ${grants.join(' · ') || 'no admin grants'}`;
  if (claims.exp) {
    const minutes = Math.round((claims.exp * 1000 - Date.now()) / 60000);
    text += minutes > 90 ? ` · expires ${new Date(claims.exp * 1000).toLocaleString()}` : ` · expires in ${Math.max(minutes, 0)} min`;
  }
  return text;
}

async function devToken(room = '') {
  const cached = state.devTokens.get(room);
  if (cached && cached.exp * 1000 - Date.now() > 60000) return cached.token;
  let response;
  try {
    const query = room ? `?${new URLSearchParams({ room })}` : '';
    response = await fetch(`/playground/admin-token${query}`, { cache: 'no-store' });
  } catch (err) {
    throw new HttpError(0, errorMessage(err));
  }
  if (response.status === 404) {
    throw new HttpError(404, 'This server does not hand out dev admin tokens (it is not running with the dev keys). Sign out and paste an admin token.');
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new HttpError(response.status, body.error || `HTTP ${response.status}`);
  const claims = decodeClaims(body.token) || {};
  state.devTokens.set(room, { token: body.token, exp: claims.exp || 0 });
  return body.token;
}

const baseToken = () => (state.dev ? devToken('') : Promise.resolve(state.token));
const roomToken = (room) => (state.dev ? devToken(room) : Promise.resolve(state.token));

// ---------------------------------------------------------------------------------------------
// Server calls
// ---------------------------------------------------------------------------------------------

async function fetchStats(token, room = '') {
  let response;
  try {
    const query = room ? `?${new URLSearchParams({ room })}` : '';
    response = await fetch(`/stats${query}`, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  } catch (err) {
    throw new HttpError(0, errorMessage(err));
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new HttpError(response.status, body.error || `HTTP ${response.status}`);
  return body;
}

async function twirp(method, body, token) {
  let response;
  try {
    response = await fetch(`/twirp/livekit.RoomService/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new HttpError(0, `Server unreachable: ${errorMessage(err)}`);
  }
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    let code = '';
    try {
      const error = JSON.parse(text);
      message = error.msg || error.error || text;
      code = error.code || '';
    } catch {
      // plain-text error (401 from the auth check)
    }
    throw new HttpError(response.status, message || `HTTP ${response.status}`, code);
  }
  return text ? JSON.parse(text) : {};
}

// ---------------------------------------------------------------------------------------------
// Sign in / out
// ---------------------------------------------------------------------------------------------

function showLoginError(message) {
  const box = $('#login-error');
  box.textContent = message || '';
  box.hidden = !message;
}

function refusal(err, token) {
  if (err.status === 0) return `Cannot reach the Roomcast server at ${location.host}: is it running?`;
  const claims = token ? decodeClaims(token) : null;
  if (token && !claims) return 'This does not look like an access token (a JWT has three parts separated by dots).';
  const video = (claims && claims.video) || {};
  if (err.status === 401 && claims && !video.roomList) {
    const what = video.roomJoin ? `a join token${video.room ? ` for room "${video.room}"` : ''}` : 'a token without admin grants';
    return `Refused: this is ${what}. The dashboard needs an admin token with roomList (and roomCreate/roomAdmin for actions). Server said: ${err.message}.`;
  }
  return `Refused: ${err.message}.`;
}

async function signIn(token, dev) {
  showLoginError('');
  let data;
  try {
    if (dev) {
      state.dev = true;
      state.devTokens.clear();
      token = await devToken('');
    }
    data = await loadStats(token);
  } catch (err) {
    state.dev = false;
    showLoginError(err instanceof HttpError ? refusal(err, dev ? '' : token) : errorMessage(err));
    return false;
  }
  state.token = dev ? '' : token;
  state.dev = dev;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  sessionStorage.setItem(DEV_KEY, dev ? '1' : '0');
  $('#login').hidden = true;
  $('#board').hidden = false;
  $('#token-info').textContent = dev
    ? 'Dev admin token (roomAdmin minted per room on demand)'
    : describeGrants(decodeClaims(token));
  state.lastOk = Date.now();
  render(data);
  clearInterval(state.timer);
  state.timer = setInterval(refresh, REFRESH_MS);
  return true;
}

function signOut(message = '') {
  clearInterval(state.timer);
  state.timer = null;
  state.token = '';
  state.dev = false;
  state.devTokens.clear();
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(DEV_KEY);
  $('#board').hidden = true;
  $('#login').hidden = false;
  $('#rooms').replaceChildren();
  clearCharts();
  $('#admin-token').value = '';
  showLoginError(message);
}

// ---------------------------------------------------------------------------------------------
// Refresh and render
// ---------------------------------------------------------------------------------------------

// 'status': the refresh loop (server unreachable…); 'error' and 'info': results of actions.
function showBoard(kind, message) {
  const box = $(`#board-${kind}`);
  box.textContent = message || '';
  box.hidden = !message;
}

// /stats lists a room's participants only for a token that is roomAdmin of that room (as
// ListParticipants): with the dev keys, fetch each room again with its own dev admin token.
async function loadStats(token) {
  const data = await fetchStats(token);
  if (state.dev) {
    await Promise.all((data.rooms || []).map(async (room) => {
      if (room.participants_listed !== false) return;
      const detail = await fetchStats(await devToken(room.name), room.name);
      const full = (detail.rooms || []).find((r) => r.sid === room.sid);
      if (full) Object.assign(room, full);
    }));
  }
  return data;
}

async function refresh() {
  if (state.inFlight || $('#board').hidden) return;
  state.inFlight = true;
  try {
    const data = await loadStats(await baseToken());
    state.lastOk = Date.now();
    showBoard('status', '');
    render(data);
  } catch (err) {
    if (err.status === 401 && !state.dev) {
      signOut(`The server no longer accepts this token: ${err.message}.`);
    } else {
      if (err.status === 401) state.devTokens.clear();
      const since = state.lastOk ? ` Last update at ${formatTime(state.lastOk)}.` : '';
      showBoard('status', err.status === 0
        ? `Server unreachable (${location.host}); retrying every ${REFRESH_MS / 1000} s.${since}`
        : `Refresh failed: ${err.message}.${since}`);
      $('#updated').textContent = '';
    }
  } finally {
    state.inFlight = false;
  }
}

function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

function reconcile(container, items, keyOf, create, update) {
  const existing = new Map();
  for (const el of container.children) existing.set(el.dataset.key, el);
  items.forEach((item, index) => {
    const key = keyOf(item);
    let el = existing.get(key);
    if (el) existing.delete(key);
    else {
      el = create(item);
      el.dataset.key = key;
    }
    update(el, item);
    if (container.children[index] !== el) container.insertBefore(el, container.children[index] || null);
  });
  for (const el of existing.values()) el.remove();
}

const fmtBitrate = (bps) => {
  if (!bps) return '0';
  if (bps < 1e6) return `${Math.round(bps / 1000)} kbps`;
  return `${(bps / 1e6).toFixed(2)} Mbps`;
};
const fmtLoss = (loss) => `${(loss * 100).toFixed(1)} %`;
const codecOf = (mime) => (mime ? mime.split('/').pop() : '–');
const sourceName = { camera: 'camera', microphone: 'microphone', screen_share: 'screen', screen_share_audio: 'screen audio', unknown: '–' };

function layersOf(track) {
  if (track.kind !== 'video') return '–';
  if (track.layers && track.layers.length) {
    return track.layers
      .map((layer) => `${layer.quality[0].toUpperCase()} ${layer.width}×${layer.height}`)
      .join(' · ');
  }
  return track.width ? `${track.width}×${track.height}` : '–';
}

function render(data) {
  state.data = data;
  const server = data.server || {};
  setText($('#cpu'), `${(server.cpu_percent ?? 0).toFixed(1)} %`);
  setText($('#memory'), `${Math.round(server.memory_mib ?? 0)} MiB`);
  setText($('#pkts-in'), `${server.packets_in_per_s ?? 0} /s`);
  setText($('#pkts-out'), `${server.packets_out_per_s ?? 0} /s`);
  const rooms = data.rooms || [];
  setText($('#room-count'), rooms.length);
  setText($('#participant-count'), rooms.reduce((n, r) => n + participantCount(r), 0));
  setText($('#updated'), `Updated ${formatTime(Date.now())} · every ${REFRESH_MS / 1000} s`);
  reconcile($('#rooms'), rooms, (r) => r.sid, createRoom, updateRoom);
  $('#no-rooms').hidden = rooms.length > 0;
  updateCharts(data);
}

const participantCount = (room) => (room.participants_listed === false
  ? room.num_participants ?? 0
  : room.participants.length);

function createRoom() {
  return h('article', { class: 'room card' },
    h('header', { class: 'room-head' },
      h('h3', { class: 'room-name' }),
      h('span', { class: 'chip count' }),
      h('span', { class: 'chip max' }),
      h('span', { class: 'room-meta mono' }),
      h('button', { type: 'button', class: 'small danger', dataset: { action: 'delete-room' } }, 'Delete room')),
    h('div', { class: 'participants' }),
    h('p', { class: 'hint nobody' }, 'Nobody here yet.'),
    h('p', { class: 'hint unlisted' }, 'Participants are listed only for a token that is roomAdmin of this room.'));
}

function updateRoom(el, room) {
  el.dataset.room = room.name;
  setText(el.querySelector('.room-name'), room.name);
  const count = participantCount(room);
  const listed = room.participants_listed !== false;
  setText(el.querySelector('.count'), `${count} participant${count === 1 ? '' : 's'}`);
  el.querySelector('.unlisted').hidden = listed || count === 0;
  const max = el.querySelector('.max');
  max.hidden = !room.max_participants;
  setText(max, `max ${room.max_participants}`);
  setText(el.querySelector('.room-meta'), `${room.sid} · created ${formatTime(room.created_at * 1000)}`);
  el.querySelector('.nobody').hidden = count > 0;
  reconcile(el.querySelector('.participants'), room.participants, (p) => p.sid, createParticipant, updateParticipant);
}

const TRACK_COLUMNS = ['Kind', 'Source', 'Codec', 'Layers', 'Muted', 'Bitrate', 'Loss', ''];
// Data tracks (named streams of frames, docs/protocol/17-data-tracks.md) are not media tracks.
const DATA_TRACK_COLUMNS = ['Data track', 'SID', 'Handle', 'Encryption'];

function createParticipant() {
  return h('div', { class: 'participant' },
    h('div', { class: 'p-head' },
      h('b', { class: 'p-name' }),
      h('span', { class: 'p-identity mono' }),
      h('span', { class: 'chip p-state' }),
      h('span', { class: 'chip warn p-hidden' }, 'hidden'),
      h('button', { type: 'button', class: 'small', dataset: { action: 'remove' } }, 'Remove')),
    h('table', { class: 'tracks' },
      h('thead', {}, h('tr', {}, ...TRACK_COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {})),
    h('table', { class: 'tracks data-tracks' },
      h('thead', {}, h('tr', {}, ...DATA_TRACK_COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {})),
    h('p', { class: 'hint no-tracks' }, 'No published tracks.'));
}

function updateParticipant(el, participant) {
  el.dataset.identity = participant.identity;
  setText(el.querySelector('.p-name'), participant.name || participant.identity);
  setText(el.querySelector('.p-identity'), participant.name ? participant.identity : '');
  const stateChip = el.querySelector('.p-state');
  setText(stateChip, participant.state.toLowerCase());
  stateChip.className = `chip p-state ${participant.state === 'ACTIVE' ? 'ok' : ''}`;
  el.querySelector('.p-hidden').hidden = !participant.hidden;
  const dataTracks = participant.data_tracks || [];
  el.querySelector('.tracks:not(.data-tracks)').hidden = participant.tracks.length === 0;
  el.querySelector('.data-tracks').hidden = dataTracks.length === 0;
  el.querySelector('.no-tracks').hidden = participant.tracks.length + dataTracks.length > 0;
  reconcile(el.querySelector('.tracks:not(.data-tracks) tbody'), participant.tracks, (t) => t.sid,
    createTrack, updateTrack);
  reconcile(el.querySelector('.data-tracks tbody'), dataTracks, (t) => t.sid,
    createDataTrack, updateDataTrack);
}

function createDataTrack() {
  return h('tr', {}, ...DATA_TRACK_COLUMNS.map((label) => h('td', { dataset: { label } })));
}

function updateDataTrack(el, track) {
  el.dataset.dataTrack = track.sid;
  const cells = el.children;
  setText(cells[0], track.name);
  setText(cells[1], track.sid);
  cells[1].className = 'mono';
  setText(cells[2], track.pub_handle);
  setText(cells[3], track.encryption === 'none' ? 'none' : track.encryption.toUpperCase());
}

function createTrack() {
  const cells = TRACK_COLUMNS.slice(0, -1).map((label) => h('td', { dataset: { label } }));
  const action = h('td', { class: 'actions' },
    h('button', { type: 'button', class: 'small', dataset: { action: 'mute' } }));
  return h('tr', {}, ...cells, action);
}

function updateTrack(el, track) {
  el.dataset.track = track.sid;
  el.dataset.kind = track.kind;
  el.dataset.source = track.source;
  el.dataset.muted = String(track.muted);
  const cells = el.children;
  setText(cells[0], track.kind);
  setText(cells[1], sourceName[track.source] || track.source);
  setText(cells[2], codecOf(track.mime_type));
  setText(cells[3], layersOf(track));
  setText(cells[4], track.muted ? 'muted' : 'no');
  cells[4].className = track.muted ? 'muted-yes' : '';
  setText(cells[5], fmtBitrate(track.bitrate_bps));
  setText(cells[6], fmtLoss(track.loss));
  cells[6].className = track.loss > 0.05 ? 'loss-high' : '';
  setText(el.querySelector('[data-action="mute"]'), track.muted ? 'Unmute' : 'Mute');
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

function explain(err, room, needsAdmin) {
  if (err.status === 0) return err.message;
  if (err.code === 'permission_denied' || err.status === 401 || err.status === 403) {
    if (needsAdmin) {
      return `Your token is not an admin of room "${room}": LiveKit grants roomAdmin per room `
        + `(roomcast token create --admin --room ${room} …).`;
    }
    return 'Your token lacks the roomCreate grant needed to create and delete rooms.';
  }
  return err.message;
}

async function act(run, done, room, needsAdmin) {
  showBoard('info', '');
  try {
    await run();
    showBoard('info', done);
    showBoard('error', '');
  } catch (err) {
    showBoard('error', explain(err, room, needsAdmin));
  }
  refresh();
}

async function onClick(event) {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const roomEl = button.closest('[data-room]');
  const room = roomEl ? roomEl.dataset.room : '';
  const identity = button.closest('[data-identity]')?.dataset.identity || '';
  const trackEl = button.closest('[data-track]');
  const action = button.dataset.action;
  if (action === 'delete-room') {
    if (!window.confirm(`Delete room "${room}"? Everyone in it is disconnected.`)) return;
    await act(async () => twirp('DeleteRoom', { room }, await baseToken()), `Deleted room "${room}".`, room, false);
  } else if (action === 'remove') {
    if (!window.confirm(`Remove ${identity} from "${room}"?`)) return;
    await act(async () => twirp('RemoveParticipant', { room, identity }, await roomToken(room)),
      `Removed ${identity} from "${room}".`, room, true);
  } else if (action === 'mute') {
    const muted = trackEl.dataset.muted !== 'true';
    const track_sid = trackEl.dataset.track;
    await act(async () => twirp('MutePublishedTrack', { room, identity, track_sid, muted }, await roomToken(room)),
      `${muted ? 'Muted' : 'Unmuted'} ${trackEl.dataset.source} of ${identity}.`, room, true);
  }
}

async function createRoomAction(event) {
  event.preventDefault();
  const name = $('#new-room').value.trim();
  if (!name) {
    showBoard('error', 'Enter a room name.');
    return;
  }
  const body = {
    name,
    empty_timeout: Number($('#new-timeout').value) || 0,
    max_participants: Number($('#new-max').value) || 0,
  };
  await act(async () => twirp('CreateRoom', body, await baseToken()), `Created room "${name}".`, name, false);
  $('#new-room').value = '';
}

async function main() {
  initCharts();
  $('#login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('#admin-token').value.trim();
    if (!token) {
      showLoginError('Paste an admin token first.');
      return;
    }
    signIn(token, false);
  });
  $('#dev-login').addEventListener('click', () => signIn('', true));
  $('#logout').addEventListener('click', () => signOut());
  $('#rooms').addEventListener('click', onClick);
  $('#create-form').addEventListener('submit', createRoomAction);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
  try {
    const response = await fetch('/playground/config', { cache: 'no-store' });
    state.devAvailable = response.ok && (await response.json()).dev_tokens === true;
  } catch {
    showLoginError(`Cannot reach the Roomcast server at ${location.host}: is it running?`);
  }
  $('#dev-login').hidden = !state.devAvailable;
  if (state.dev && state.devAvailable) await signIn('', true);
  else if (state.token) await signIn(state.token, false);
  state.initialized = true;
}

main();
