// usher console: plain script, no framework, no other origin. Everything a
// token or a server says is written as text (textContent), never as HTML.
'use strict';

(function () {
  const API = '/usher.v1.TokenService/';
  const TIME_CLAIMS = new Set(['exp', 'iat', 'nbf', 'auth_time', 'updated_at']);
  const CLAIM_ORDER = ['iss', 'sub', 'aud', 'azp', 'client_id', 'scope', 'scp', 'iat', 'nbf', 'exp', 'jti', 'cnf'];

  // ---- small DOM helpers ------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function replace(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  function tableWrap(table) {
    return h('div', { class: 'table-wrap' }, table);
  }

  // ---- talking to usher ---------------------------------------------------

  async function call(method, body) {
    const resp = await fetch(API + method, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
      referrerPolicy: 'no-referrer',
    });
    return answer(resp, method);
  }

  async function getJSON(path) {
    const resp = await fetch(path, { cache: 'no-store', credentials: 'same-origin', referrerPolicy: 'no-referrer' });
    return answer(resp, path);
  }

  async function answer(resp, what) {
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const code = data && data.code ? data.code : 'HTTP ' + resp.status;
      const msg = data && data.message ? data.message : resp.statusText;
      throw new Error(what + ': ' + code + ': ' + msg);
    }
    return data || {};
  }

  // ---- formatting -----------------------------------------------------------

  function reasonName(r) {
    return String(r || 'REASON_UNSPECIFIED').replace(/^REASON_/, '');
  }

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function fmtAbs(d) {
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + ' UTC';
  }

  function fmtDuration(ms) {
    let s = Math.round(Math.abs(ms) / 1000);
    const parts = [];
    for (const [unit, size] of [['d', 86400], ['h', 3600], ['min', 60], ['s', 1]]) {
      if (s >= size || (unit === 's' && parts.length === 0)) {
        parts.push(Math.floor(s / size) + ' ' + unit);
        s %= size;
      }
      if (parts.length === 2) break;
    }
    return parts.join(' ');
  }

  function fmtRel(d, now) {
    const ms = d.getTime() - (now || Date.now());
    if (Math.abs(ms) < 1000) return 'now';
    return ms > 0 ? 'in ' + fmtDuration(ms) : fmtDuration(ms) + ' ago';
  }

  // A time as two lines: absolute (UTC), then relative to now (and the
  // claim's number, when it is one).
  function timeCell(d, raw) {
    return [h('span', { text: fmtAbs(d) }), h('span', { class: 'rel', text: fmtRel(d) + (raw === undefined ? '' : ' · ' + raw) })];
  }

  function apiLabel(apis, aud) {
    if (aud === 'other') return 'an unregistered API';
    const name = apis.get(aud);
    return name ? name + ' (' + aud + ')' : aud;
  }

  // ---- the token and the audience as typed ---------------------------------

  // cleanToken strips what comes along when a token is copied from a header
  // or a terminal: "Authorization:", "Bearer ", quotes and white space.
  function cleanToken(raw) {
    let t = String(raw || '').trim();
    t = t.replace(/^authorization\s*:\s*/i, '');
    t = t.replace(/^bearer\s+/i, '');
    t = t.replace(/^["']|["']$/g, '');
    return t.replace(/\s+/g, '');
  }

  // chosenAudience maps a registered API's name to its audience; anything
  // else is taken as typed.
  function chosenAudience(raw, apiList) {
    const v = String(raw || '').trim();
    if (!v || apiList.some((a) => a.audience === v)) return v;
    const byName = apiList.find((a) => a.name && a.name.toLowerCase() === v.toLowerCase());
    return byName ? byName.audience : v;
  }

  // ---- expected vs actual, character by character ---------------------------

  const LOOKALIKES = {
    0x0430: 'a', 0x0435: 'e', 0x043e: 'o', 0x0440: 'p', 0x0441: 'c', 0x0445: 'x', 0x0443: 'y', 0x0456: 'i',
    0x0458: 'j', 0x0455: 's', 0x04cf: 'l', 0x0410: 'A', 0x0412: 'B', 0x0415: 'E', 0x041a: 'K', 0x041c: 'M',
    0x041d: 'H', 0x041e: 'O', 0x0420: 'P', 0x0421: 'C', 0x0422: 'T', 0x0425: 'X', 0x03bf: 'o', 0x03b1: 'a',
    0x03bd: 'v', 0x0391: 'A', 0x0392: 'B', 0x0395: 'E', 0x039f: 'O', 0x03a1: 'P', 0x0131: 'i', 0x00a0: ' ',
    0x2010: '-', 0x2011: '-', 0x2012: '-', 0x2013: '-', 0x2014: '-', 0x2212: '-', 0x2044: '/', 0x2215: '/',
    0x200b: '', 0x200c: '', 0x200d: '', 0x2060: '', 0xfeff: '',
  };

  function codePoint(ch) {
    return 'U+' + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
  }

  // lcsMarks returns, for each character of a and of b, whether it is part
  // of a longest common subsequence (kept) or not (marked as different).
  function lcsMarks(a, b) {
    const n = a.length;
    const m = b.length;
    const dp = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
      }
    }
    const keepA = new Array(n).fill(false);
    const keepB = new Array(m).fill(false);
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) {
        keepA[i++] = true;
        keepB[j++] = true;
      } else if (dp[i + 1][j] >= dp[i][j + 1]) i++;
      else j++;
    }
    return { keepA, keepB, common: dp[0][0] };
  }

  // charDiff marks what differs between a and b: the common prefix and
  // suffix are kept; the middles are compared character by character when
  // they share at least half of their characters, else marked whole.
  function charDiff(aStr, bStr) {
    const a = Array.from(aStr);
    const b = Array.from(bStr);
    let pre = 0;
    while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
    let suf = 0;
    while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
    const midA = a.slice(pre, a.length - suf);
    const midB = b.slice(pre, b.length - suf);
    let keepA = midA.map(() => false);
    let keepB = midB.map(() => false);
    if (midA.length && midB.length && midA.length <= 512 && midB.length <= 512) {
      const l = lcsMarks(midA, midB);
      if (l.common * 2 >= Math.max(midA.length, midB.length)) {
        keepA = l.keepA;
        keepB = l.keepB;
      }
    }
    const mark = (chars, keep) => chars.map((c, i) => ({ c, same: i < pre || i >= chars.length - suf || keep[i - pre] }));
    return { a: mark(a, keepA), b: mark(b, keepB) };
  }

  // diffValue renders one side of a diff: kept characters as text, the
  // others in <mark>, invisible ones made visible.
  function diffValue(segments) {
    const out = h('span', { class: 'value' });
    let run = '';
    let runSame = true;
    const flush = () => {
      if (!run) return;
      out.append(runSame ? document.createTextNode(run) : h('mark', { text: run }));
      run = '';
    };
    for (const s of segments) {
      let c = s.c;
      if (!s.same && /\s/.test(c)) c = '␣';
      else if (!s.same && LOOKALIKES[c.codePointAt(0)] === '') c = '[' + codePoint(c) + ']';
      if (s.same !== runSame) flush();
      runSame = s.same;
      run += c;
    }
    flush();
    if (!segments.length) out.append(h('span', { class: 'muted', text: '(empty)' }));
    return out;
  }

  function diffNotes(e, a) {
    const notes = [];
    if (e === a) return notes;
    if (e.toLowerCase() === a.toLowerCase()) notes.push('They differ only in letter case: usher compares them exactly, byte for byte.');
    const noSlash = (s) => s.replace(/\/+$/, '');
    if (noSlash(e) === noSlash(a)) notes.push('They differ only by a trailing slash.');
    if (e.trim() === a.trim() && e !== a.trim()) notes.push('One of them has white space at the start or end.');
    const noScheme = (s) => s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
    if (noScheme(e) !== e && noScheme(e) === noScheme(a)) notes.push('They differ only in the scheme.');
    for (const [label, s] of [['expected', e], ['actual', a]]) {
      Array.from(s).forEach((ch, i) => {
        const cp = ch.codePointAt(0);
        if (cp >= 0x20 && cp <= 0x7e) return;
        const like = LOOKALIKES[cp];
        let what = 'is not ASCII';
        if (like === '') what = 'is invisible';
        else if (like !== undefined) what = 'looks like “' + like + '” but is another character';
        else if (cp >= 0xff01 && cp <= 0xff5e) what = 'is a full-width “' + String.fromCodePoint(cp - 0xfee0) + '”';
        notes.push('Character ' + (i + 1) + ' of the ' + label + ' value, “' + ch + '” (' + codePoint(ch) + '), ' + what + '.');
      });
    }
    return notes;
  }

  // closest picks the actual value nearest to e (the fewest differing characters).
  function closest(e, actual) {
    let best = actual[0];
    let bestScore = -1;
    for (const a of actual) {
      const x = Array.from(e);
      const y = Array.from(a);
      const score = x.length <= 512 && y.length <= 512 ? lcsMarks(x, y).common * 2 - Math.abs(x.length - y.length) : 0;
      if (score > bestScore) {
        best = a;
        bestScore = score;
      }
    }
    return best;
  }

  function mismatchView(mm, apis) {
    const claim = mm.claim || 'value';
    const expected = mm.expected || [];
    const actual = mm.actual || [];
    const box = h('div', { class: 'mismatch' });
    const named = (aud) => (claim === 'aud' && apis.get(aud) ? h('span', { class: 'name', text: apis.get(aud) }) : null);
    for (const e of expected) {
      const a = actual.length ? closest(e, actual) : null;
      const dl = h('dl', { class: 'diff' });
      if (a === null) {
        append(dl, [h('dt', { text: 'expected ' + claim }), h('dd', {}, h('span', { class: 'value', text: e }), named(e)),
          h('dt', { text: 'actual ' + claim }), h('dd', { class: 'muted', text: '(absent)' })]);
        box.append(dl);
        continue;
      }
      const d = charDiff(e, a);
      append(dl, [h('dt', { text: 'expected ' + claim }), h('dd', {}, diffValue(d.a), named(e)),
        h('dt', { text: 'actual ' + claim }), h('dd', {}, diffValue(d.b), named(a))]);
      const others = actual.filter((x) => x !== a);
      if (others.length) {
        append(dl, [h('dt', { text: 'also in the token' }),
          h('dd', {}, others.map((o, i) => [i ? ', ' : '', h('span', { class: 'value', text: o }), named(o)]))]);
      }
      box.append(dl);
      const notes = diffNotes(e, a);
      if (notes.length) box.append(h('ul', { class: 'notes' }, notes.map((n) => h('li', { text: n }))));
    }
    if (!expected.length && actual.length) {
      box.append(h('dl', { class: 'diff' }, h('dt', { text: 'actual ' + claim }),
        h('dd', {}, actual.map((o, i) => [i ? ', ' : '', h('span', { class: 'value', text: o }), named(o)]))));
    }
    return box;
  }

  // ---- claims and header ----------------------------------------------------

  function claimValue(name, v) {
    if (TIME_CLAIMS.has(name) && typeof v === 'number' && isFinite(v)) {
      return h('td', { class: 'value' }, timeCell(new Date(v * 1000), v));
    }
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return h('td', { class: 'value', text: v.join(', ') });
    if (typeof v === 'string') return h('td', { class: 'value', text: v });
    return h('td', { class: 'value', text: JSON.stringify(v) });
  }

  function orderedKeys(obj) {
    const keys = Object.keys(obj);
    const known = CLAIM_ORDER.filter((k) => keys.includes(k));
    return known.concat(keys.filter((k) => !CLAIM_ORDER.includes(k)).sort());
  }

  function kvTable(obj, caption, label) {
    const body = h('tbody');
    for (const k of orderedKeys(obj)) body.append(h('tr', {}, h('th', { scope: 'row', class: 'mono', text: k }), claimValue(k, obj[k])));
    return tableWrap(h('table', { role: 'table', 'aria-label': label },
      h('caption', { text: caption }),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'claim' }), h('th', { scope: 'col', text: 'value' }))),
      body));
  }

  function headerTable(obj) {
    const body = h('tbody');
    for (const k of Object.keys(obj).sort()) {
      const v = obj[k];
      body.append(h('tr', {}, h('th', { scope: 'row', class: 'mono', text: k }),
        h('td', { class: 'value', text: typeof v === 'string' ? v : JSON.stringify(v) })));
    }
    return tableWrap(h('table', { role: 'table', 'aria-label': 'Header' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'parameter' }), h('th', { scope: 'col', text: 'value' }))),
      body));
  }

  // ---- the token debugger ----------------------------------------------------

  function verdictHeadline(v, audience, apis) {
    const reason = reasonName(v.reason);
    const ok = v.valid === true;
    return h('div', { class: 'headline' },
      h('span', { class: 'badge ' + (ok ? 'good' : 'bad'), text: reason }),
      h('span', { class: 'message', text: (ok ? 'accepted at ' : 'refused at ') + apiLabel(apis, audience) }));
  }

  // violationsView lists every failed check when there is more than the
  // one the verdict already shows.
  function violationsView(list, apis) {
    if (!list || list.length < 2) return null;
    return [h('h3', { text: 'Every check that failed (' + list.length + ')' }),
      h('ul', { class: 'violations' }, list.map((x) => h('li', {},
        h('span', { class: 'badge bad', text: reasonName(x.reason) }), ' ', x.message || '',
        x.mismatch && (x.mismatch.expected || x.mismatch.actual) ? mismatchView(x.mismatch, apis) : null)))];
  }

  function acceptedView(ins, apis) {
    const auds = ins.audiences || [];
    const sig = reasonName(ins.signature);
    let body;
    if (auds.length) {
      body = h('ul', { class: 'accepted' }, auds.map((a) => h('li', { text: a.name ? a.name + ' (' + a.audience + ')' : a.audience })));
    } else if (sig !== 'VALID') {
      body = h('p', { text: 'None: the signature did not verify (' + sig + '), so no API would accept it.' });
    } else {
      body = h('p', { text: 'None of the ' + apis.size + ' registered APIs.' });
    }
    return [h('h3', { text: 'Registered APIs that would accept this token' }), body];
  }

  function claimsView(v, ins) {
    const verified = reasonName(ins.signature) === 'VALID';
    const claims = (v && v.claims) || ins.claims || {};
    const raw = claims.raw || {};
    const out = [h('h3', { text: 'Claims' + (verified ? '' : ' (unverified: the signature did not verify)') })];
    if (Object.keys(raw).length) out.push(kvTable(raw, verified ? 'Signed by a trusted key.' : 'Not verified: read them as a claim, not a fact.', 'Claims'));
    else out.push(h('p', { class: 'muted', text: 'No claims could be read.' }));
    if (ins.header && Object.keys(ins.header).length) out.push(h('h3', { text: 'Header' }), headerTable(ins.header));
    return out;
  }

  function renderVerdict(status, v, ins, audience, apis) {
    const parts = [];
    if (v) {
      parts.push(verdictHeadline(v, audience, apis));
      if (v.message) parts.push(h('p', { class: 'message', text: v.message }));
      if (v.hint) parts.push(h('p', { class: 'hint' }, h('strong', { text: 'Hint: ' }), v.hint));
      if (v.mismatch) parts.push(h('h3', { text: 'Expected vs actual' }), mismatchView(v.mismatch, apis));
      parts.push(violationsView(v.violations, apis));
    } else {
      parts.push(h('div', { class: 'headline' }, h('span', { class: 'badge neutral', text: 'DECODED' }),
        h('span', { class: 'message', text: 'no audience chosen: what the token is, and which APIs would accept it' })));
      if (ins.message) parts.push(h('p', { class: 'message', text: ins.message }));
      if (ins.hint) parts.push(h('p', { class: 'hint' }, h('strong', { text: 'Hint: ' }), ins.hint));
    }
    parts.push(acceptedView(ins, apis), claimsView(v, ins));
    status.dataset.reason = v ? reasonName(v.reason) : 'DECODED';
    replace(status, parts);
  }

  async function loadAPIs() {
    try {
      const list = await getJSON('/console/api/apis');
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  async function initDebugger() {
    const form = document.getElementById('debugger');
    const token = document.getElementById('token');
    const audience = document.getElementById('audience');
    const status = document.getElementById('verdict');
    const button = document.getElementById('validate');
    const apiList = await loadAPIs();
    const apis = new Map(apiList.map((a) => [a.audience, a.name || '']));
    replace(document.getElementById('apis'), apiList.map((a) => h('option', { value: a.audience, label: a.name || a.audience }, a.name || a.audience)));

    token.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    document.getElementById('clear').addEventListener('click', () => {
      token.value = '';
      audience.value = '';
      status.dataset.reason = '';
      replace(status, h('p', { class: 'muted', text: 'Cleared.' }));
      token.focus();
    });
    // The token stays in this page only: gone when the page is left, so
    // that no restored session or back button brings it back.
    window.addEventListener('pagehide', () => {
      token.value = '';
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const tok = cleanToken(token.value);
      const aud = chosenAudience(audience.value, apiList);
      if (!tok) {
        status.dataset.reason = '';
        replace(status, h('p', { class: 'error', text: 'Paste a token into “Token” first.' }));
        token.focus();
        return;
      }
      button.disabled = true;
      status.setAttribute('aria-busy', 'true');
      try {
        const [v, ins] = await Promise.all([aud ? call('ValidateToken', { token: tok, expectedAudience: aud }) : null, call('InspectToken', { token: tok })]);
        renderVerdict(status, v, ins, aud, apis);
      } catch (e) {
        status.dataset.reason = 'ERROR';
        replace(status, h('p', { class: 'error', text: 'usher did not answer with a verdict: ' + e.message }));
      } finally {
        button.disabled = false;
        status.removeAttribute('aria-busy');
      }
    });
  }

  // ---- issuers -------------------------------------------------------------------

  function chips(list, empty) {
    if (!list || !list.length) return h('span', { class: 'muted', text: empty });
    return h('ul', { class: 'chips' }, list.map((x) => h('li', { text: x })));
  }

  function whenView(ts, never) {
    if (!ts) return h('span', { class: 'muted', text: never });
    return h('span', {}, timeCell(new Date(ts)));
  }

  function issuerView(is) {
    const dl = h('dl', { class: 'kv' });
    const row = (k, v) => append(dl, [h('dt', { text: k }), h('dd', {}, v)]);
    row('Key set', is.jwksUri ? h('span', { class: 'mono', text: is.jwksUri }) : h('span', { class: 'muted', text: 'none (opaque tokens only)' }));
    row('Key ids', chips(is.keyIds, 'no key held'));
    row('Algorithms', chips(is.algorithms, 'none'));
    row('Last refresh', whenView(is.lastRefresh, 'never'));
    row('Next refresh', whenView(is.nextRefresh, 'not scheduled'));
    row('Last error', is.lastError ? h('span', { class: 'error', text: is.lastError }) : h('span', { class: 'muted', text: 'none' }));
    if (is.introspectionEndpoint || is.introspectionLastError) {
      row('Introspection', h('span', { class: 'mono', text: is.introspectionEndpoint || '(from discovery, not yet read)' }));
      row('Introspection error', is.introspectionLastError ? h('span', { class: 'error', text: is.introspectionLastError }) : h('span', { class: 'muted', text: 'none' }));
    }
    return h('article', { class: 'issuer', 'aria-label': is.issuer }, h('h2', { text: is.issuer }), dl);
  }

  async function initIssuers() {
    const box = document.getElementById('issuers');
    const load = async () => {
      box.setAttribute('aria-busy', 'true');
      try {
        const resp = await call('ListIssuers', {});
        const list = resp.issuers || [];
        replace(box, list.length ? list.map(issuerView) : h('p', { class: 'muted', text: 'No issuer is configured.' }),
          h('p', { class: 'muted', text: 'As of ' + fmtAbs(new Date()) + '.' }));
      } catch (e) {
        replace(box, h('p', { class: 'error', text: 'Could not list the issuers: ' + e.message }));
      } finally {
        box.removeAttribute('aria-busy');
      }
    };
    document.getElementById('reload').addEventListener('click', load);
    await load();
  }

  // ---- where tokens go wrong ----------------------------------------------------

  function heat(n, max) {
    if (!n) return 'h0';
    if (max <= 1) return 'h5';
    return 'h' + Math.min(5, Math.max(1, 1 + Math.round((4 * Math.log(n)) / Math.log(max))));
  }

  function axis(values, apiList) {
    const registered = apiList.map((a) => a.audience);
    const set = new Set(values);
    if (registered.length <= 12) registered.forEach((a) => set.add(a));
    const rank = (a) => (a === 'other' ? 2 : registered.includes(a) ? 0 : 1);
    return Array.from(set).sort((x, y) => rank(x) - rank(y) || (rank(x) === 0 ? registered.indexOf(x) - registered.indexOf(y) : x.localeCompare(y)));
  }

  function audHeader(aud, apis, scope) {
    const name = aud === 'other' ? 'unregistered' : apis.get(aud);
    return h('th', { scope }, name ? h('span', { text: name }) : null, name ? h('br') : null, h('code', { text: aud }));
  }

  function matrixView(st, apis) {
    const counts = new Map(st.mismatches.map((m) => [m.expected + '\u0000' + m.actual, m.count]));
    const rows = axis(st.mismatches.map((m) => m.expected), st.apis);
    const cols = axis(st.mismatches.map((m) => m.actual), st.apis);
    const max = Math.max(0, ...st.mismatches.map((m) => m.count));
    const head = h('tr', {}, h('th', { scope: 'col', text: 'expected API ↓ · token audience →' }), cols.map((c) => audHeader(c, apis, 'col')));
    const body = h('tbody', {}, rows.map((r) => h('tr', {}, audHeader(r, apis, 'row'), cols.map((c) => {
      const n = counts.get(r + '\u0000' + c) || 0;
      const same = r === c && r !== 'other';
      return h('td', { class: 'heat ' + (same ? 'diag' : heat(n, max)), 'data-expected': r, 'data-actual': c, text: same ? '—' : String(n) });
    }))));
    const since = new Date(st.since);
    return tableWrap(h('table', { role: 'table', id: 'mismatch-matrix', 'aria-label': 'Audience mismatches by expected API and token audience' },
      h('caption', { text: 'AUDIENCE_MISMATCH verdicts since ' + fmtAbs(since) + ' (' + fmtRel(since) + '). A row is the API that refused the token; a column the API the token was issued for.' }),
      h('thead', {}, head), body));
  }

  function topPairs(st, apis) {
    if (!st.mismatches.length) return h('p', { class: 'muted', text: 'No audience mismatch since usher started: every token reached the API it was issued for.' });
    const items = st.mismatches.slice(0, 5).map((m) => h('li', {},
      h('strong', { text: String(m.count) }), ' × a token for ', apiLabel(apis, m.actual), ' sent to ', apiLabel(apis, m.expected)));
    const out = [h('ol', { class: 'top-pairs' }, items)];
    if (st.mismatchesOverflow) {
      out.push(h('p', { class: 'muted', text: st.mismatchesOverflow + ' more between other pairs (the first ' + st.maxPairs + ' pairs are counted apart).' }));
    }
    return out;
  }

  function legend() {
    return h('p', { class: 'legend' }, 'fewer', h('span', { class: 'sw h1' }), h('span', { class: 'sw h3' }), h('span', { class: 'sw h5' }), 'more');
  }

  function reasonsView(st) {
    if (!st.reasons.length) return h('p', { class: 'muted', text: 'No verdict in the last ' + st.minutes.length + ' minutes.' });
    const max = Math.max(0, ...st.reasons.filter((r) => r.reason !== 'VALID').flatMap((r) => r.counts));
    const label = (t, i) => (i === st.minutes.length - 1 ? 'now' : pad(new Date(t).getHours()) + ':' + pad(new Date(t).getMinutes()));
    const head = h('tr', {}, h('th', { scope: 'col', text: 'reason' }), st.minutes.map((t, i) => h('th', { scope: 'col', class: 'num', text: label(t, i) })),
      h('th', { scope: 'col', class: 'num', text: 'total' }));
    const body = h('tbody', {}, st.reasons.map((r) => h('tr', { 'data-reason': r.reason },
      h('th', { scope: 'row' }, h('span', { class: 'badge ' + (r.reason === 'VALID' ? 'good' : 'bad'), text: r.reason })),
      r.counts.map((n) => h('td', { class: 'heat ' + (r.reason === 'VALID' ? (n ? 'h1' : 'h0') : heat(n, max)), text: String(n) })),
      h('td', { class: 'num', text: String(r.counts.reduce((a, b) => a + b, 0)) }))));
    return tableWrap(h('table', { role: 'table', id: 'reasons-table', class: 'timeline', 'aria-label': 'Verdicts by reason per minute' },
      h('caption', { text: 'One column a minute, the last ' + st.minutes.length + ' minutes (local time).' }), h('thead', {}, head), body));
  }

  async function initWhere() {
    const matrix = document.getElementById('matrix');
    const reasons = document.getElementById('reasons');
    const auto = document.getElementById('auto');
    const load = async () => {
      try {
        const st = await getJSON('/console/api/stats');
        const apis = new Map((st.apis || []).map((a) => [a.audience, a.name || '']));
        if (!st.recording) {
          replace(matrix, h('p', { class: 'muted', text: 'This usher records no counts for the console.' }));
          replace(reasons);
          return;
        }
        replace(matrix, matrixView(st, apis), legend(), topPairs(st, apis));
        replace(reasons, reasonsView(st));
      } catch (e) {
        replace(matrix, h('p', { class: 'error', text: 'Could not read the counts: ' + e.message }));
      } finally {
        matrix.removeAttribute('aria-busy');
        reasons.removeAttribute('aria-busy');
      }
    };
    document.getElementById('reload').addEventListener('click', load);
    setInterval(() => {
      if (auto.checked && !document.hidden) load();
    }, 10000);
    await load();
  }

  // ---- start ---------------------------------------------------------------------

  const init = { debugger: initDebugger, issuers: initIssuers, where: initWhere }[document.body.dataset.page];
  if (init) init();
})();
