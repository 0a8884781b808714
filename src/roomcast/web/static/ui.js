// Small helpers shared by the playground and the dashboard.

export const $ = (selector, root = document) => root.querySelector(selector);

export function errorMessage(err) {
  if (!err) return 'unknown error';
  if (typeof err === 'string') return err;
  return err.message || String(err);
}

// A sentence a person can act on, for getUserMedia/getDisplayMedia failures.
export function describeMediaError(err, what) {
  const LK = window.LivekitClient;
  const failure = LK && LK.MediaDeviceFailure ? LK.MediaDeviceFailure.getFailure(err) : undefined;
  const name = err && err.name;
  if (failure === 'PermissionDenied' || name === 'NotAllowedError') {
    return `Access to the ${what} was denied. Allow it in the browser's site settings `
      + '(the icon next to the address bar) and try again; you can still watch and chat.';
  }
  if (failure === 'NotFound' || name === 'NotFoundError' || name === 'OverconstrainedError') {
    return `No ${what} was found on this device.`;
  }
  if (failure === 'DeviceInUse' || name === 'NotReadableError') {
    return `The ${what} is in use by another application, or the system blocked it.`;
  }
  return `Could not start the ${what}: ${errorMessage(err)}`;
}

export function formatTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function initials(name) {
  const words = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean);
  const letters = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || '?').slice(0, 2);
  return letters.toUpperCase();
}

// Element builder: h('td', {class: 'x', dataset: {a: 1}}, 'text', child).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'text') el.textContent = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}
