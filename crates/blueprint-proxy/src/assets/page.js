// The connections page of blueprint-proxy: plain JavaScript, no framework, no build step.
//
// Two rules hold everywhere below:
// - every value that comes from outside (ids, errors, scopes, times, messages) goes into
//   the page as text (`textContent`, text nodes, attribute values), never parsed as HTML;
// - the secret key lives in this tab's sessionStorage only, and leaves it only in the
//   `Authorization: Bearer` header of calls to this proxy's JSON API.
'use strict';

(function () {
  const KEY_ITEM = 'blueprint-proxy:secret-key';
  // status in the API -> [what the page says, badge class]
  const STATUSES = {
    ok: ['OK', 'ok'],
    needs_reauthorization: ['Needs re-authorization', 'bad'],
    refresh_failing: ['Refresh failing', 'warn'],
    unreadable: ['Unreadable in the store', 'bad'],
    missing: ['Missing', 'warn'],
  };

  const byId = (id) => document.getElementById(id);
  const elements = {
    status: byId('status'),
    error: byId('error'),
    keySection: byId('key-section'),
    keyForm: byId('key-form'),
    keyInput: byId('key-input'),
    workspace: byId('workspace'),
    integrations: byId('integrations'),
    reload: byId('reload'),
    forgetKey: byId('forget-key'),
  };

  // The sections of the integrations shown, by name: { name, oauthApp, heading, rows }.
  let sections = new Map();
  let nextId = 0;
  const freshId = (prefix) => `${prefix}-${++nextId}`;

  // An element with attributes (names from this file only) and children (nodes, or
  // strings that become text nodes).
  function h(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  // --- messages ------------------------------------------------------------------

  function say(text) {
    elements.error.hidden = true;
    elements.error.textContent = '';
    elements.status.textContent = text;
  }

  function complain(text) {
    elements.status.textContent = '';
    elements.error.textContent = text;
    elements.error.hidden = false;
  }

  // An error the proxy (or the network) gave, said plainly.
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
      this.handled = false;
    }

    describe() {
      const where = this.status ? `${this.code}, HTTP ${this.status}` : this.code;
      return `${this.message} (${where})`;
    }
  }

  function report(what, error) {
    if (error instanceof ApiError) {
      if (!error.handled) complain(`${what}: ${error.describe()}`);
    } else {
      complain(`${what}: ${error && error.message ? error.message : String(error)}`);
    }
  }

  // --- the key ---------------------------------------------------------------------

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_ITEM);
    } catch (_) {
      return null;
    }
  }

  function keepKey(key) {
    window.sessionStorage.setItem(KEY_ITEM, key);
  }

  function dropKey() {
    try {
      window.sessionStorage.removeItem(KEY_ITEM);
    } catch (_) {
      // nothing kept, nothing to drop
    }
  }

  // Shows the key form (and why, if `reason`), hiding everything the key gave access to.
  function askForKey(reason) {
    elements.workspace.hidden = true;
    elements.integrations.replaceChildren();
    sections = new Map();
    elements.keySection.hidden = false;
    elements.keyInput.value = '';
    if (reason) complain(reason);
    elements.keyInput.focus();
  }

  // What is wrong with a key before it is sent, or null. The proxy's keys are printable
  // ASCII without spaces, at least 16 characters: anything else cannot be one.
  function keyProblem(key) {
    if (key.length === 0) return 'Enter the secret key.';
    if (!/^[\x21-\x7e]+$/.test(key)) {
      return 'That is not the proxy\'s key: a key holds no spaces and only printable ASCII characters.';
    }
    if (key.length < 16) return 'That is not the proxy\'s key: a key is at least 16 characters long.';
    return null;
  }

  // --- calls -----------------------------------------------------------------------

  // One call to the JSON API with `key`; the parsed JSON answer (null for none), or an
  // ApiError with the proxy's code and message.
  async function api(method, path, body, key) {
    const headers = { Accept: 'application/json', Authorization: `Bearer ${key}` };
    const init = {
      method,
      headers,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, 'unreachable', 'The proxy could not be reached; is it running?');
    }
    let text = '';
    try {
      text = await response.text();
    } catch (_) {
      text = '';
    }
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (response.ok) return data;
    const error = data && typeof data === 'object' && data.error && typeof data.error === 'object'
      ? data.error
      : null;
    const code = error && typeof error.code === 'string' ? error.code : `http_${response.status}`;
    const message = error && typeof error.message === 'string'
      ? error.message
      : `The proxy answered HTTP ${response.status} without an explanation`;
    throw new ApiError(response.status, code, message);
  }

  // A call with the key kept in this tab. A 401 means the key is no longer the proxy's:
  // it is dropped and asked for again.
  async function call(method, path, body) {
    const key = storedKey();
    if (!key) {
      askForKey();
      const missing = new ApiError(401, 'unauthorized', 'Enter the secret key first.');
      missing.handled = true;
      throw missing;
    }
    try {
      return await api(method, path, body, key);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        dropKey();
        askForKey(`The proxy refused the key: ${error.message}. Enter the key again.`);
        error.handled = true;
      }
      throw error;
    }
  }

  const connectionPath = (integration, id) =>
    `connections/${encodeURIComponent(integration)}/${encodeURIComponent(id)}`;

  // Disables `button` while `work` runs.
  async function busy(button, work) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      return await work();
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }

  // --- showing ---------------------------------------------------------------------

  // An RFC 3339 time as `2030-01-31 12:00:00 UTC` in a <time>, or a dash.
  function time(value, markExpired) {
    if (typeof value !== 'string' || value === '') return h('span', { class: 'none' }, markExpired ? 'never' : '—');
    const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$/.exec(value);
    const text = match ? `${match[1]} ${match[2]} UTC` : value;
    const node = h('time', { datetime: value }, text);
    if (markExpired && Date.parse(value) < Date.now()) {
      return h('span', null, node, ' (expired)');
    }
    return node;
  }

  function statusBadge(status) {
    const known = Object.prototype.hasOwnProperty.call(STATUSES, status) ? STATUSES[status] : null;
    const [label, tone] = known || [String(status), 'warn'];
    return h('span', { class: `badge ${tone}` }, label);
  }

  function cell(label, ...children) {
    return h('td', { 'data-label': label }, ...children);
  }

  function connectionRow(section, connection) {
    const id = String(connection.connection_id);
    const actions = h('div', { class: 'actions' });
    if (section.oauthApp && connection.status !== 'ok') {
      const again = h('button', { type: 'button', 'aria-label': `Re-authorize connection ${id}` }, 'Re-authorize');
      again.addEventListener('click', () => connect(section, id, again));
      actions.append(again);
    }
    const remove = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete connection ${id}` }, 'Delete');
    remove.addEventListener('click', () => removeConnection(section, id, remove));
    actions.append(remove);
    const scopes = Array.isArray(connection.scopes) && connection.scopes.length > 0
      ? connection.scopes.map(String).join(' ')
      : null;
    const lastError = typeof connection.last_error === 'string' && connection.last_error !== ''
      ? connection.last_error
      : null;
    return h('tr', { 'data-connection': id },
      h('th', { scope: 'row', 'data-label': 'Connection id' }, h('code', null, id)),
      cell('Status', statusBadge(connection.status)),
      cell('Last error', lastError === null ? h('span', { class: 'none' }, '—') : lastError),
      cell('Expires', time(connection.expires_at, true)),
      cell('Updated', time(connection.updated_at, false)),
      cell('Scopes', scopes === null ? h('span', { class: 'none' }, '—') : scopes),
      cell('Actions', actions));
  }

  function showConnections(section, connections) {
    section.rows.replaceChildren();
    if (connections.length === 0) {
      section.rows.append(h('p', { class: 'none' }, 'No connections yet.'));
      return;
    }
    const head = h('tr', null,
      ...['Connection id', 'Status', 'Last error', 'Expires', 'Updated', 'Scopes', 'Actions']
        .map((name) => h('th', { scope: 'col' }, name)));
    const body = h('tbody');
    const sorted = [...connections].sort((a, b) =>
      String(a.connection_id).localeCompare(String(b.connection_id)));
    for (const connection of sorted) body.append(connectionRow(section, connection));
    section.rows.append(h('table', null,
      h('caption', null, `Connections of ${section.name}`), h('thead', null, head), body));
  }

  // A labelled input; `hint` is shown under the label.
  function field(label, attributes, hint) {
    const id = freshId('field');
    const hintId = hint ? `${id}-hint` : undefined;
    const input = h('input', { id, 'aria-describedby': hintId, spellcheck: 'false', ...attributes });
    const parts = [h('label', { for: id }, ...label), input];
    if (hint) parts.splice(1, 0, h('span', { id: hintId, class: 'hint' }, hint));
    return { input, nodes: parts };
  }

  function connectForm(section) {
    const titleId = freshId('connect-title');
    const id = field(['Connection id'], { name: 'connection_id', autocomplete: 'off', required: true },
      'Letters, digits and . _ : @ - (up to 256).');
    const button = h('button', { type: 'submit', class: 'primary' }, 'Connect');
    const form = h('form', { 'aria-labelledby': titleId, novalidate: true },
      h('h3', { id: titleId }, 'Connect an account'),
      h('p', { class: 'hint' }, 'Sends you to the provider to authorize; the proxy keeps the tokens.'),
      ...id.nodes, h('div', null, button));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      connect(section, id.input.value, button);
    });
    return form;
  }

  function importForm(section) {
    const titleId = freshId('import-title');
    const optional = () => h('span', { class: 'optional' }, ' (optional)');
    const id = field(['Connection id'], { name: 'connection_id', autocomplete: 'off', required: true });
    const access = field(['Access token'], { name: 'access_token', type: 'password', autocomplete: 'off', required: true });
    const refresh = section.oauthApp
      ? field(['Refresh token', optional()], { name: 'refresh_token', type: 'password', autocomplete: 'off' })
      : null;
    const expires = field(['Expires at', optional()], { name: 'expires_at', autocomplete: 'off', placeholder: '2030-01-31T12:00:00Z' },
      'RFC 3339; leave empty for a token that does not expire.');
    const button = h('button', { type: 'submit' }, 'Import token');
    const form = h('form', { 'aria-labelledby': titleId, novalidate: true },
      h('h3', { id: titleId }, 'Import a token'),
      ...id.nodes, ...access.nodes, ...(refresh ? refresh.nodes : []), ...expires.nodes,
      h('div', null, button));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const connection = id.input.value;
      const body = { access_token: access.input.value };
      if (refresh && refresh.input.value !== '') body.refresh_token = refresh.input.value;
      if (expires.input.value.trim() !== '') body.expires_at = expires.input.value.trim();
      busy(button, async () => {
        if (connection === '') {
          complain('Import a token: enter a connection id.');
          id.input.focus();
          return;
        }
        try {
          await call('PUT', connectionPath(section.name, connection), body);
        } catch (error) {
          report(`Importing a token for ${connection} of ${section.name} failed`, error);
          return;
        }
        // The token leaves the page as soon as the proxy has it.
        form.reset();
        say(`Imported a token for connection ${connection} of ${section.name}.`);
        await loadConnections();
      });
    });
    return form;
  }

  function integrationSection(integration) {
    const name = String(integration.name);
    const titleId = freshId('integration');
    const heading = h('h2', { id: titleId, tabindex: '-1' }, name);
    const rows = h('div', { class: 'connections' });
    const section = { name, oauthApp: integration.oauth_app === true, heading, rows };
    const hint = section.oauthApp
      ? null
      : h('p', { class: 'hint' }, 'No OAuth app is configured for this integration (oauth_client_id in integrations.yaml): import a token instead.');
    const forms = h('div', { class: 'forms' });
    if (section.oauthApp) forms.append(connectForm(section));
    forms.append(importForm(section));
    const node = h('section', { class: 'integration', 'aria-labelledby': titleId, 'data-integration': name },
      heading, hint, rows, forms);
    return { section, node };
  }

  // --- actions ---------------------------------------------------------------------

  async function connect(section, connection, button) {
    await busy(button, async () => {
      if (connection === '') {
        complain('Connect: enter a connection id.');
        return;
      }
      let session;
      try {
        session = await call('POST', 'connect/sessions', { integration: section.name, connection_id: connection });
      } catch (error) {
        report(`Connecting ${connection} of ${section.name} failed`, error);
        return;
      }
      let url = null;
      try {
        url = new URL(session && session.url, window.location.href);
      } catch (_) {
        url = null;
      }
      if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
        complain('Connecting failed: the proxy answered a connect session without a usable URL.');
        return;
      }
      say(`Sending you to the provider to authorize ${connection} of ${section.name}…`);
      window.location.assign(url.href);
    });
  }

  async function removeConnection(section, connection, button) {
    const sure = window.confirm(
      `Delete connection ${connection} of ${section.name}?\n\nThe proxy forgets its tokens; calls with it fail until it is connected or imported again.`);
    if (!sure) {
      say(`Kept connection ${connection} of ${section.name}.`);
      return;
    }
    await busy(button, async () => {
      try {
        await call('DELETE', connectionPath(section.name, connection));
      } catch (error) {
        report(`Deleting ${connection} of ${section.name} failed`, error);
        await loadConnections();
        return;
      }
      say(`Deleted connection ${connection} of ${section.name}.`);
      section.heading.focus();
      await loadConnections();
    });
  }

  // Fetches the connections and shows them under their integrations.
  async function loadConnections() {
    let listed;
    try {
      listed = await call('GET', 'connections');
    } catch (error) {
      report('Loading the connections failed', error);
      return false;
    }
    const all = listed && Array.isArray(listed.connections) ? listed.connections : [];
    for (const section of sections.values()) {
      showConnections(section, all.filter((c) => c && c.integration === section.name));
    }
    return true;
  }

  // Shows the integrations `listed` (the answer of GET /integrations), then their
  // connections.
  async function show(listed) {
    const integrations = listed && Array.isArray(listed.integrations) ? listed.integrations : [];
    sections = new Map();
    const nodes = [];
    for (const integration of integrations) {
      const { section, node } = integrationSection(integration);
      sections.set(section.name, section);
      nodes.push(node);
    }
    if (nodes.length === 0) nodes.push(h('p', { class: 'none' }, 'The configuration has no integrations.'));
    elements.integrations.replaceChildren(...nodes);
    elements.keySection.hidden = true;
    elements.workspace.hidden = false;
    return loadConnections();
  }

  async function reload() {
    let listed;
    try {
      listed = await call('GET', 'integrations');
    } catch (error) {
      report('Loading the integrations failed', error);
      return;
    }
    if (await show(listed)) {
      const count = [...sections.values()].reduce((n, s) => n + s.rows.querySelectorAll('tbody tr').length, 0);
      say(`${count} connection${count === 1 ? '' : 's'} in ${sections.size} integration${sections.size === 1 ? '' : 's'}.`);
    }
  }

  // --- wiring ----------------------------------------------------------------------

  elements.keyForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = elements.keyInput.value;
    const problem = keyProblem(key);
    if (problem) {
      elements.keyInput.value = '';
      complain(problem);
      elements.keyInput.focus();
      return;
    }
    const button = elements.keyForm.querySelector('button');
    busy(button, async () => {
      let listed;
      try {
        listed = await api('GET', 'integrations', undefined, key);
      } catch (error) {
        elements.keyInput.value = '';
        if (error instanceof ApiError && error.status === 401) {
          complain('That key is not the proxy\'s key (the proxy answered 401 unauthorized). Check BLUEPRINT_SECRET_KEY and enter it again.');
        } else {
          report('Checking the key failed', error);
        }
        elements.keyInput.focus();
        return;
      }
      keepKey(key);
      elements.keyInput.value = '';
      say('Key accepted; it is kept in this tab until the tab is closed.');
      if (await show(listed)) {
        const first = elements.integrations.querySelector('h2');
        if (first) first.focus();
      }
    });
  });

  elements.reload.addEventListener('click', () => busy(elements.reload, reload));

  elements.forgetKey.addEventListener('click', () => {
    dropKey();
    askForKey();
    say('The key is forgotten in this tab.');
  });

  if (storedKey()) {
    reload();
  } else {
    askForKey();
  }
})();
