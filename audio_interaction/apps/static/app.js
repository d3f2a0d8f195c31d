// The page: microphone -> AudioWorklet (16 kHz s16le) -> websocket /ws; events back.
// Protocol: docs/serve_protocol.md. No external assets.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get('token');
const state = {
  ws: null, ctx: null, node: null, stream: null, chunks: [], threshold: 0.5,
  replies: [], current: '', counts: { chunks: 0, drops: 0, stalls: 0 }, lag: null,
};
window.serveEvents = [];   // every event received, for tests and the console
window.serveReplies = state.replies;

function setStatus(text, kind) {
  const el = $('status');
  el.textContent = text;
  el.className = 'status ' + (kind || '');
}

function log(line) {
  const el = $('log');
  el.textContent = (line + '\n' + el.textContent).slice(0, 6000);
}

$('threshold').addEventListener('input', () => {
  state.threshold = parseFloat($('threshold').value);
  $('threshold-value').textContent = state.threshold.toFixed(2);
  send({ type: 'threshold', threshold: state.threshold });
  draw();
});

$('instruction').addEventListener('change', () => {
  send({ type: 'instruction', instruction: $('instruction').value });
});

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

async function start() {
  $('start').disabled = true;
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    setStatus('microphone refused: ' + error.message, 'err');
    $('start').disabled = false;
    return;
  }
  state.ctx = new AudioContext();
  await state.ctx.audioWorklet.addModule('/worklet.js');
  const source = state.ctx.createMediaStreamSource(state.stream);
  state.node = new AudioWorkletNode(state.ctx, 'pcm-16k', { processorOptions: { targetRate: 16000 } });
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : '');
  const ws = state.ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    send({ type: 'start', instruction: $('instruction').value, sample_rate: 16000,
           format: 's16le', threshold: state.threshold });
    state.node.port.onmessage = (e) => { state.sent = (state.sent || 0) + 1; if (ws.readyState === WebSocket.OPEN) ws.send(e.data); };
    source.connect(state.node);
    // Pulled by the destination through a muted gain, so the worklet always runs.
    const mute = state.ctx.createGain();
    mute.gain.value = 0;
    state.node.connect(mute).connect(state.ctx.destination);
    if (state.ctx.state !== 'running') state.ctx.resume();
    setStatus(`connected · mic at ${state.ctx.sampleRate} Hz → 16 kHz`, 'ok');
    $('stop').disabled = false;
  };
  ws.onmessage = (e) => onEvent(JSON.parse(e.data));
  ws.onclose = (e) => {
    setStatus(`closed (${e.code}${e.reason ? ': ' + e.reason : ''})`, e.code === 1000 ? '' : 'err');
    cleanup();
  };
  ws.onerror = () => setStatus('websocket error', 'err');
}

function stop() {
  send({ type: 'stop' });
  if (state.node) state.node.port.onmessage = null;
  $('stop').disabled = true;
}

function cleanup() {
  if (state.node) state.node.disconnect();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  if (state.ctx) state.ctx.close();
  state.node = state.stream = state.ctx = null;
  $('start').disabled = false;
  $('stop').disabled = true;
}

function onEvent(ev) {
  window.serveEvents.push(ev);
  switch (ev.event) {
    case 'ready':
      log(`ready: slot ${ev.slot} of ${ev.slots}, threshold ${ev.threshold}, policy ${ev.policy}`);
      break;
    case 'chunk':
      state.chunks.push({ p: ev.speak_probability, spoke: ev.decision === 'SPEAK', thr: ev.threshold });
      if (state.chunks.length > 120) state.chunks.shift();
      state.counts.chunks += 1;
      state.lag = ev.lag_seconds;
      draw();
      break;
    case 'heard':
      $('transcript').textContent = ev.transcript_tail;
      break;
    case 'reply_start':
      state.current = '';
      break;
    case 'reply_tokens':
      state.current = ev.reply_text;
      $('current').textContent = '… ' + state.current;
      break;
    case 'reply_end':
    case 'yield':
      addReply(ev);
      break;
    case 'drop':
      state.counts.drops = ev.dropped_frames || ev.dropped_chunks || state.counts.drops + 1;
      log(`drop (${ev.reason})`);
      break;
    case 'stall':
      state.counts.stalls += 1;
      log(`stall: no audio for ${ev.waited_seconds} s`);
      break;
    case 'error':
      log('error: ' + ev.message);
      break;
    default:
      log(`${ev.event} ${JSON.stringify(ev).slice(0, 160)}`);
  }
  $('counters').textContent = `chunks ${state.counts.chunks} · lag ${state.lag === null ? '—'
    : (1000 * state.lag).toFixed(0) + ' ms'} · drops ${state.counts.drops} · stalls ${state.counts.stalls}`;
}

function addReply(ev) {
  const reply = { time: ev.reply_start, end: ev.time, text: ev.text, reason: ev.reason };
  state.replies.push(reply);
  const li = document.createElement('li');
  li.className = ev.event === 'yield' ? 'yield' : '';
  li.dataset.start = ev.reply_start;
  li.dataset.reason = ev.reason;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = ev.text;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = ` (${Number(ev.reply_start).toFixed(2)} s, ${ev.reason})`;
  li.append(text, meta);
  $('replies').append(li);
  $('replies').scrollTop = $('replies').scrollHeight;
  $('current').textContent = '';
  if ($('speak').checked && ev.event === 'reply_end' && ev.text.trim() && 'speechSynthesis' in window) {
    speechSynthesis.speak(new SpeechSynthesisUtterance(ev.text));
  }
}

function draw() {
  const canvas = $('strip'), g = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, n = 120, bw = w / n;
  g.clearRect(0, 0, w, h);
  state.chunks.forEach((c, i) => {
    const x = (n - state.chunks.length + i) * bw;
    g.fillStyle = c.spoke ? '#e4572e' : '#9aa7b6';
    g.fillRect(x + 1, h - c.p * (h - 4), bw - 2, c.p * (h - 4));
  });
  const thr = state.chunks.length ? state.chunks[state.chunks.length - 1].thr : state.threshold;
  g.strokeStyle = '#2c7be5';
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(0, h - thr * (h - 4));
  g.lineTo(w, h - thr * (h - 4));
  g.stroke();
}

$('start').addEventListener('click', start);
$('stop').addEventListener('click', stop);
draw();
