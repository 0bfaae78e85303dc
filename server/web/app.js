// The captions page: captions the browser's microphone through the WebSocket /v1/stream,
// or watches one of the server's caption sources through /v1/captions
// (docs/WEBSOCKET.md describes both). No framework, no build step.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $('model'), language: $('language'), source: $('source'),
    mic: $('mic'), watch: $('watch'), level: $('level'), status: $('status'),
    transcript: $('transcript'), hint: $('hint'), captions: $('captions'),
    interim: $('interim'), latest: $('latest'), copy: $('copy'),
    txt: $('txt'), srt: $('srt'), vtt: $('vtt'), large: $('large'),
  };
  const committed = ui.interim.querySelector('.committed');
  const tail = ui.interim.querySelector('.tail');

  const token = new URLSearchParams(location.search).get('token') || '';
  const STABLE = 0.9; // interim results at least this stable are the committed prefix
  const CLOSE_GRACE_MS = 30000; // after {"type":"end"}, how long to wait for the server

  let info = { models: {}, sources: [], languages: [] };
  let finals = []; // {text, start, end} in seconds, as shown in #captions
  let captureStart = null; // Date of offset zero of the watched source
  let session = null; // the open WebSocket call, see startMic / startWatch

  // ---- helpers -------------------------------------------------------------------------

  function wsUrl(path) {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = token ? '?token=' + encodeURIComponent(token) : '';
    return url.href;
  }

  /** proto3 JSON Duration ("1.500s") to seconds. */
  const seconds = (d) => (d ? parseFloat(d) || 0 : 0);

  function setStatus(text, kind = 'info') {
    ui.status.textContent = text;
    ui.status.dataset.kind = kind;
  }

  /** idle, starting (asking for the microphone), live, finishing (after "end"), watching. */
  function setState(state) {
    document.body.dataset.state = state;
    const idle = state === 'idle';
    const noSources = info.sources.length === 0;
    ui.mic.textContent = state === 'live' || state === 'finishing' ? 'Stop microphone' : 'Start microphone';
    ui.mic.disabled = !(idle || state === 'live');
    ui.watch.textContent = state === 'watching' ? 'Stop watching' : 'Watch';
    ui.watch.disabled = !(state === 'watching' || (idle && !noSources));
    ui.model.disabled = ui.language.disabled = !idle;
    ui.source.disabled = !idle || noSources;
  }

  function option(value, text, selected) {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = text;
    o.selected = !!selected;
    return o;
  }

  const capitalise = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

  const tokenHint = () => (token
    ? ' The token in this page\'s address (?token=…) was not accepted.'
    : ' This server needs a token: open this page with ?token=YOUR_TOKEN in its address.');

  /** Text for an error the server sent ({"error": {...}}) and the close that followed. */
  function errorText(error, code, reason) {
    const message = (error && (error.message || error.status)) || reason || 'no details';
    let text = `The server ended the call: ${message} (close ${code}${reason ? ' ' + reason : ''}).`;
    if (code === 4016) text += tokenHint();
    const retry = error && seconds(error.retryAfter);
    if (retry) text += ` Try again in ${Math.ceil(retry)} s.`;
    return text;
  }

  // ---- server information -----------------------------------------------------------------

  async function loadInfo() {
    setStatus('Connecting to the server…');
    let response;
    try {
      response = await fetch('/v1/info', {
        cache: 'no-store',
        headers: token ? { Authorization: 'Bearer ' + token } : {},
      });
    } catch (e) {
      setStatus('Cannot reach the server. Check that it is running, then reload the page.', 'error');
      return;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) { /* not JSON */ }
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || response.statusText;
      const hint = response.status === 401 ? tokenHint() : '';
      setStatus(`The server refused: ${message} (HTTP ${response.status}).${hint}`, 'error');
      return;
    }
    info = {
      models: (body && body.models) || {},
      sources: (body && body.sources) || [],
      languages: (body && body.languages) || [],
    };
    fillPickers();
    if (document.body.dataset.state === 'idle') setStatus('Ready: start the microphone, or watch a caption source.', 'ok');
  }

  function fillPickers() {
    const models = info.models.models || [];
    ui.model.replaceChildren(...models.map((m) =>
      option(m.name, m.displayName || m.name, m.name === info.models.defaultModel)));
    if (models.length === 0) ui.model.append(option('', 'Server default', true));
    fillLanguages();
    ui.source.replaceChildren(...info.sources.map((s, i) =>
      option(s.name, s.name + sourceKind(s), i === 0)));
    if (info.sources.length === 0) ui.source.append(option('', 'None on this server', true));
    setState(document.body.dataset.state);
  }

  function sourceKind(s) {
    const kind = { SOURCE_KIND_MICROPHONE: 'microphone', SOURCE_KIND_FILE: 'file', SOURCE_KIND_NETWORK: 'network' }[s.kind];
    return kind ? ` (${kind})` : '';
  }

  /** The model's languages: one means no choice; none means all of Whisper's, or detection. */
  function fillLanguages() {
    const previous = ui.language.value;
    const model = (info.models.models || []).find((m) => m.name === ui.model.value);
    const codes = (model && model.languageCodes) || [];
    const names = new Map(info.languages.map((l) => [l.code, l.name]));
    const list = codes.length ? codes.map((code) => ({ code, name: names.get(code) })) : info.languages;
    const options = list.map((l) => option(l.code, capitalise(l.name) || l.code, l.code === previous));
    if (codes.length !== 1) options.unshift(option('auto', 'Detect automatically', previous === 'auto'));
    ui.language.replaceChildren(...options);
  }

  // ---- the transcript -------------------------------------------------------------------

  const transcriptOf = (result) =>
    (result.alternatives && result.alternatives[0] && result.alternatives[0].transcript) || '';

  function nearBottom() {
    const t = ui.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 40;
  }

  /** Runs a change of the transcript, following the newest text unless the user scrolled up. */
  function render(change) {
    const follow = nearBottom();
    change();
    const empty = finals.length === 0;
    ui.hint.hidden = !empty || !ui.interim.hidden;
    for (const b of [ui.copy, ui.txt, ui.srt, ui.vtt]) b.disabled = empty;
    if (follow) ui.transcript.scrollTop = ui.transcript.scrollHeight;
    ui.latest.hidden = nearBottom();
  }

  function clearTranscript() {
    finals = [];
    render(() => {
      ui.captions.replaceChildren();
      showInterim([]);
    });
  }

  /** A response's results: at most one final, then interim results of the open utterance. */
  function showResults(results, replay) {
    const interims = [];
    for (const r of results) {
      if (r.isFinal) addFinal(r);
      else interims.push(r);
    }
    if (!replay) showInterim(interims);
  }

  function addFinal(result) {
    const text = transcriptOf(result);
    if (!text.trim()) return;
    const final = { text, start: seconds(result.resultStartOffset), end: seconds(result.resultEndOffset) };
    finals.push(final);
    const p = document.createElement('p');
    p.className = 'final';
    p.textContent = text;
    p.title = hoverTime(final);
    ui.captions.append(p);
  }

  function showInterim(results) {
    let steady = '';
    let unsure = '';
    for (const r of results) {
      if (!unsure && (r.stability || 0) >= STABLE) steady += transcriptOf(r);
      else unsure += transcriptOf(r);
    }
    committed.textContent = steady;
    tail.textContent = unsure;
    ui.interim.hidden = !(steady + unsure).trim();
  }

  function clock(s) {
    const t = Math.floor(s);
    const h = Math.floor(t / 3600);
    const mm = String(Math.floor(t / 60) % 60).padStart(h ? 2 : 1, '0');
    const ss = String(t % 60).padStart(2, '0');
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function hoverTime(final) {
    let text = `${clock(final.start)} – ${clock(final.end)}`;
    if (captureStart) text += ` (${new Date(captureStart.getTime() + final.start * 1000).toLocaleTimeString()})`;
    return text;
  }

  // ---- copy and download --------------------------------------------------------------------

  const plain = () => finals.map((f) => f.text.trim()).join('\n') + '\n';

  function stamp(s, separator) {
    const ms = Math.round(s * 1000);
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:` +
      `${pad(Math.floor(ms / 1000) % 60)}${separator}${pad(ms % 1000, 3)}`;
  }

  const cues = (separator) => finals.map((f) =>
    `${stamp(f.start, separator)} --> ${stamp(Math.max(f.end, f.start + 0.5), separator)}\n${f.text.trim()}\n`);
  const srt = () => cues(',').map((cue, i) => `${i + 1}\n${cue}`).join('\n');
  const vtt = () => ['WEBVTT\n', ...cues('.')].join('\n');

  function download(extension, text, type) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([text], { type: type + ';charset=utf-8' }));
    const now = new Date();
    const day = now.toISOString().slice(0, 10);
    const time = now.toTimeString().slice(0, 5).replace(':', '');
    a.download = `captions-${day}-${time}.${extension}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  async function copy() {
    const text = plain();
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      const area = document.createElement('textarea');
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    ui.copy.textContent = 'Copied';
    setTimeout(() => { ui.copy.textContent = 'Copy'; }, 1500);
  }

  // ---- WebSocket calls -------------------------------------------------------------------

  /** Opens a call; `kind` is 'mic' or 'source'. Messages and the close go to the session. */
  function open(kind, path, firstMessage) {
    const ws = new WebSocket(wsUrl(path));
    ws.binaryType = 'arraybuffer';
    const s = { kind, ws, opened: false, error: null, stopped: false };
    ws.onopen = () => {
      s.opened = true;
      ws.send(JSON.stringify(firstMessage));
      if (s.onopen) s.onopen();
    };
    ws.onmessage = (event) => {
      if (session !== s || typeof event.data !== 'string') return;
      let m;
      try {
        m = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (m.error) {
        s.error = m.error;
        return;
      }
      if (m.source) sourceChanged(m.source);
      if (m.results && m.results.length) render(() => showResults(m.results, m.isReplay));
    };
    ws.onclose = (event) => closed(s, event);
    return s;
  }

  function closed(s, event) {
    if (s.release) s.release();
    clearTimeout(s.grace);
    if (session !== s) return;
    session = null;
    render(() => showInterim([]));
    setState('idle');
    const { code, reason } = event;
    if (s.error || code >= 4000) {
      setStatus(errorText(s.error, code, reason), 'error');
    } else if (s.stopped && !s.opened) {
      setStatus('Stopped.', 'ok');
    } else if (s.stopped && code !== 1000) {
      setStatus('Stopped, but the server did not finish in time: the last words may be missing.');
    } else if (!s.opened) {
      setStatus(`Cannot reach the server at ${location.host} (close ${code}). Check that it is running, then try again.`, 'error');
    } else if (code === 1000 && s.kind === 'mic') {
      setStatus(s.stopped ? 'Stopped. The transcript is below.' : 'The server ended the stream.', 'ok');
    } else if (code === 1000) {
      setStatus('The caption source has ended.', 'ok');
    } else {
      setStatus(`The connection to the server was lost (close ${code}${reason ? ' ' + reason : ''}).`, 'error');
    }
  }

  function sourceChanged(source) {
    captureStart = source.captureStartTime ? new Date(source.captureStartTime) : null;
    const name = source.displayName || source.name || 'the default source';
    switch (source.state) {
      case 'SOURCE_STATE_PAUSED':
        setStatus(`“${name}” is paused.`);
        break;
      case 'SOURCE_STATE_INTERRUPTED':
        setStatus(`“${name}” is interrupted; the server is retrying` +
          (source.status && source.status.message ? `: ${source.status.message}` : '.'), 'error');
        break;
      case 'SOURCE_STATE_ENDED':
        setStatus(`“${name}” has ended.`);
        break;
      default:
        setStatus(`Watching “${name}”.`, 'ok');
    }
  }

  // ---- the microphone ---------------------------------------------------------------------

  function microphoneError(e) {
    switch (e && e.name) {
      case 'NotAllowedError':
      case 'SecurityError':
        return 'Microphone access was refused. Allow the microphone for this page ' +
          '(in the address bar or the browser settings), then press Start microphone again.';
      case 'NotFoundError':
      case 'OverconstrainedError':
        return 'No microphone was found. Connect one, then press Start microphone again.';
      case 'NotReadableError':
        return 'The microphone cannot be read: another application may be using it.';
      default:
        return `Could not open the microphone: ${(e && e.message) || e}.`;
    }
  }

  /** Float samples in [-1, 1] to signed 16-bit little-endian PCM. */
  function linear16(samples) {
    const bytes = new ArrayBuffer(samples.length * 2);
    const view = new DataView(bytes);
    for (let i = 0; i < samples.length; i++) {
      const x = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(i * 2, Math.round(x < 0 ? x * 0x8000 : x * 0x7fff), true);
    }
    return bytes;
  }

  async function startMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus('This browser gives the microphone only to secure pages: ' +
        'open this page over https:// or on http://localhost.', 'error');
      return;
    }
    setState('starting');
    setStatus('Asking for the microphone…');
    let stream;
    let context;
    let node;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      setState('idle');
      setStatus(microphoneError(e), 'error');
      return;
    }
    try {
      context = new AudioContext();
      // The server takes 8-48 kHz; a device running faster is resampled by the browser.
      if (context.sampleRate > 48000) {
        await context.close();
        context = new AudioContext({ sampleRate: 48000 });
      }
      await context.audioWorklet.addModule('/web/worklet.js');
      node = new AudioWorkletNode(context, 'capture', {
        numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit',
      });
      context.createMediaStreamSource(stream).connect(node);
      await context.resume();
    } catch (e) {
      stream.getTracks().forEach((t) => t.stop());
      if (context) context.close();
      setState('idle');
      setStatus(`Could not process the microphone's audio: ${e.message || e}.`, 'error');
      return;
    }

    const config = {
      config: {
        audioFormat: { encoding: 'AUDIO_ENCODING_LINEAR16', sampleRateHertz: context.sampleRate, audioChannelCount: 1 },
        enableWordTimeOffsets: false,
      },
      interimResults: true,
    };
    if (ui.model.value) config.config.model = ui.model.value;
    if (ui.language.value && ui.language.value !== 'auto') config.config.languageCodes = [ui.language.value];

    clearTranscript();
    captureStart = null;
    const s = open('mic', '/v1/stream', config);
    session = s;
    setState('live');
    setStatus('Connecting…');
    const waiting = []; // audio captured before the WebSocket opened (up to 5 s)
    node.port.onmessage = (event) => {
      const samples = event.data;
      let peak = 0;
      for (let i = 0; i < samples.length; i += 8) peak = Math.max(peak, Math.abs(samples[i]));
      ui.level.style.width = `${Math.min(100, Math.round(Math.sqrt(peak) * 100))}%`;
      const pcm = linear16(samples);
      if (s.ws.readyState === WebSocket.OPEN) s.ws.send(pcm);
      else if (s.ws.readyState === WebSocket.CONNECTING && waiting.length < 50) waiting.push(pcm);
    };
    s.onopen = () => {
      for (const pcm of waiting) s.ws.send(pcm);
      waiting.length = 0;
      if (!s.stopped) setStatus('Listening: speak now.', 'ok');
    };
    stream.getAudioTracks().forEach((track) => {
      track.onended = () => {
        if (session !== s || s.stopped) return;
        stopMic();
        setStatus('The microphone stopped (unplugged or access withdrawn); finishing the last words…');
      };
    });
    s.release = () => {
      node.port.onmessage = null;
      stream.getTracks().forEach((t) => t.stop());
      if (context.state !== 'closed') context.close();
      ui.level.style.width = '0';
    };
  }

  function stopMic() {
    const s = session;
    s.stopped = true;
    s.release();
    if (s.ws.readyState === WebSocket.OPEN) {
      s.ws.send(JSON.stringify({ type: 'end' }));
      setState('finishing');
      setStatus('Finishing the last words…');
      s.grace = setTimeout(() => s.ws.close(), CLOSE_GRACE_MS);
    } else {
      s.ws.close();
    }
  }

  // ---- caption sources --------------------------------------------------------------------

  function startWatch() {
    const name = ui.source.value;
    clearTranscript();
    captureStart = null;
    session = open('source', '/v1/captions', { source: name, interimResults: true, historySize: 50 });
    setState('watching');
    setStatus(`Connecting to “${name}”…`);
  }

  function stopWatch() {
    const s = session;
    session = null;
    s.ws.close(1000);
    render(() => showInterim([]));
    setState('idle');
    setStatus('Stopped watching.', 'ok');
  }

  // ---- wiring ---------------------------------------------------------------------------

  ui.mic.addEventListener('click', () => (session ? stopMic() : startMic()));
  ui.watch.addEventListener('click', () => (session ? stopWatch() : startWatch()));
  ui.model.addEventListener('change', fillLanguages);
  ui.copy.addEventListener('click', copy);
  ui.txt.addEventListener('click', () => download('txt', plain(), 'text/plain'));
  ui.srt.addEventListener('click', () => download('srt', srt(), 'application/x-subrip'));
  ui.vtt.addEventListener('click', () => download('vtt', vtt(), 'text/vtt'));
  ui.transcript.addEventListener('scroll', () => { ui.latest.hidden = nearBottom(); });
  ui.latest.addEventListener('click', () => {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
    ui.latest.hidden = true;
  });
  ui.large.addEventListener('change', () => {
    document.documentElement.classList.toggle('large', ui.large.checked);
    try {
      localStorage.setItem('captions-large', ui.large.checked ? '1' : '');
    } catch (e) { /* storage unavailable */ }
  });
  try {
    ui.large.checked = localStorage.getItem('captions-large') === '1';
    document.documentElement.classList.toggle('large', ui.large.checked);
  } catch (e) { /* storage unavailable */ }

  setState('idle');
  loadInfo();
})();
