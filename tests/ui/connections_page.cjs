// The connections page in headless Chromium, driven by Playwright. Run by tests/ui/main.rs
// (`cargo test --test ui`), which starts the real proxy binary and a fake provider and
// passes their URLs and the test's values in the environment. Exits non-zero at the
// first failed check, naming it.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; tests/ui/main.rs sets it`);
  return value;
}

const PROXY = env('PROXY_URL');
const PROVIDER = env('PROVIDER_URL');
const KEY = env('SECRET_KEY');
const TOKEN = env('IMPORTED_TOKEN');
const ISSUED_PREFIX = env('ISSUED_PREFIX');
const HOSTILE_ERROR = env('HOSTILE_ERROR');
const HOSTILE_SCOPE = env('HOSTILE_SCOPE');
const SCREENSHOTS = env('SCREENSHOTS');
const CHROMIUM = env('BLUEPRINT_UI_CHROMIUM');
const KEY_ITEM = 'blueprint-proxy:secret-key';

// Playwright from the npm cache outside the repository, never a browser download.
const { chromium } = require(require.resolve('playwright-core', { paths: [env('BLUEPRINT_UI_NODE')] }));

const started = Date.now();
let passed = 0;
async function check(name, body) {
  try {
    await body();
  } catch (error) {
    error.check = name;
    throw error;
  }
  passed += 1;
  console.log(`ok ${passed} - ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

// Whether any of `secrets` is in the page: its HTML, the values of its inputs, its title.
async function secretsInPage(page, secrets) {
  return page.evaluate((secrets) => {
    const html = document.documentElement.outerHTML;
    const values = [...document.querySelectorAll('input, textarea, select')].map((i) => i.value).join('\n');
    return secrets.filter((s) => html.includes(s) || values.includes(s) || document.title.includes(s));
  }, secrets);
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'blueprint-ui-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1100, height: 900 },
    timeout: 30000,
  });
  try {
    await scenario(context);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function scenario(context) {
  context.setDefaultTimeout(10000);
  const page = context.pages()[0] || (await context.newPage());

  // Everything the page logs as an error about its policy, and every uncaught exception.
  const violations = [];
  page.on('console', (message) => {
    const text = message.text();
    if (message.type() === 'error' && /Content Security Policy|Trusted ?Type|Refused to/i.test(text)) {
      violations.push(text);
    }
  });
  page.on('pageerror', (error) => violations.push(`uncaught: ${error.message}`));
  // Every request the page makes, with all its headers.
  const requests = [];
  page.on('request', (request) => {
    requests.push(request.allHeaders().then((headers) => ({ url: request.url(), method: request.method(), headers })));
  });
  // Dialogs (the delete confirmation) are answered by the step that expects one.
  let answer = null;
  page.on('dialog', async (dialog) => {
    const reply = answer;
    answer = null;
    if (!reply) {
      violations.push(`unexpected dialog: ${dialog.message()}`);
      await dialog.dismiss();
      return;
    }
    reply.seen = dialog.message();
    if (reply.accept) await dialog.accept();
    else await dialog.dismiss();
  });
  const expectDialog = (accept) => {
    answer = { accept, seen: null };
    return answer;
  };

  const alert = page.locator('#error');
  const status = page.locator('#status');
  const keyInput = page.locator('input').and(page.getByLabel('Secret key'));
  const intercom = page.locator('section[data-integration="intercom"]');
  const helpdesk = page.locator('section[data-integration="helpdesk"]');
  const row = (section, id) => section.locator(`tr[data-connection="${id}"]`);
  const field = (r, label) => r.locator(`td[data-label="${label}"]`);

  await check('the page loads without the key, with its policy, and asks for the key', async () => {
    const response = await page.goto(`${PROXY}/`);
    assert.equal(response.status(), 200);
    const headers = response.headers();
    assert.match(headers['content-security-policy'], /^default-src 'self';/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    await keyInput.waitFor({ state: 'visible' });
    assert.equal(await page.locator('#workspace').isHidden(), true);
    assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'key-input');
  });

  await check('a key that is not a key is told so, and asked again', async () => {
    await keyInput.fill('short');
    await keyInput.press('Enter');
    await alert.filter({ hasText: 'at least 16 characters' }).waitFor();
    assert.equal(await keyInput.inputValue(), '');
  });

  await check('a wrong key is told clearly, not kept, and asked again', async () => {
    const wrong = 'wrong-key-0123456789-abcdef';
    await keyInput.fill(wrong);
    await keyInput.press('Enter');
    await alert.filter({ hasText: "That key is not the proxy's key (the proxy answered 401 unauthorized)" }).waitFor();
    assert.equal(await keyInput.isVisible(), true);
    assert.equal(await keyInput.inputValue(), '');
    assert.equal(await page.evaluate((item) => sessionStorage.getItem(item), KEY_ITEM), null);
    assert.deepEqual(await secretsInPage(page, [wrong]), []);
  });

  await check('the right key, typed without a mouse, shows the integrations', async () => {
    await keyInput.focus();
    await page.keyboard.type(KEY);
    await page.keyboard.press('Enter');
    await intercom.getByRole('heading', { name: 'intercom', level: 2 }).waitFor();
    await helpdesk.getByRole('heading', { name: 'helpdesk', level: 2 }).waitFor();
    assert.equal(await keyInput.isVisible(), false);
    assert.equal(await alert.isHidden(), true);
    // helpdesk has no OAuth app: no Connect form, and the page says why.
    assert.equal(await helpdesk.getByRole('button', { name: 'Connect', exact: true }).count(), 0);
    await helpdesk.getByText('No OAuth app is configured').waitFor();
    assert.equal(await intercom.getByRole('button', { name: 'Connect', exact: true }).count(), 1);
  });

  await check('the key is in sessionStorage only: not in the DOM, localStorage or cookies', async () => {
    const storage = await page.evaluate(() => ({
      session: Object.fromEntries(Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)])),
      local: localStorage.length,
      cookie: document.cookie,
    }));
    assert.deepEqual(storage.session, { [KEY_ITEM]: KEY });
    assert.equal(storage.local, 0);
    assert.equal(storage.cookie, '');
    assert.deepEqual(await context.cookies(), []);
    assert.deepEqual(await secretsInPage(page, [KEY]), []);
  });

  await check('a value with <script> and <img onerror> renders as text', async () => {
    const hostile = row(intercom, 'hostile.1');
    await hostile.waitFor();
    assert.equal(await field(hostile, 'Last error').textContent(), HOSTILE_ERROR);
    assert.equal(await field(hostile, 'Status').textContent(), 'Refresh failing');
    const dom = await page.evaluate(() => ({
      images: document.querySelectorAll('img').length,
      scripts: [...document.scripts].map((s) => s.getAttribute('src')),
      pwned: window.__pwned === true,
    }));
    assert.deepEqual(dom, { images: 0, scripts: ['assets/page.js'], pwned: false });
    assert.deepEqual(await secretsInPage(page, ['tok_UI_hostile_never_shown']), []);
  });

  await check("the proxy's JSON error is shown in words", async () => {
    const form = intercom.getByRole('form', { name: 'Import a token' });
    await form.getByLabel('Connection id').fill('acme');
    await form.getByLabel('Access token').fill(TOKEN);
    await form.getByLabel('Expires at').fill('tomorrow');
    await form.getByRole('button', { name: 'Import token' }).click();
    await alert.filter({ hasText: '`expires_at` must be an RFC 3339 time' }).waitFor();
    assert.match(await alert.textContent(), /\(invalid_request, HTTP 400\)$/);
    assert.equal(await row(intercom, 'acme').count(), 0);
  });

  await check('importing a token (keyboard only) lists the connection as OK, and the token leaves the page', async () => {
    const form = intercom.getByRole('form', { name: 'Import a token' });
    await form.getByLabel('Expires at').fill('');
    await form.getByLabel('Connection id').focus();
    await page.keyboard.press('Control+A');
    await page.keyboard.type('acme');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.name), 'access_token');
    await page.keyboard.press('Control+A');
    await page.keyboard.type(TOKEN);
    await page.keyboard.press('Enter');
    await status.filter({ hasText: 'Imported a token for connection acme of intercom.' }).waitFor();
    const acme = row(intercom, 'acme');
    await acme.waitFor();
    assert.equal(await field(acme, 'Status').textContent(), 'OK');
    assert.equal(await field(acme, 'Expires').textContent(), 'never');
    assert.match(await field(acme, 'Updated').textContent(), /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$/);
    assert.deepEqual(await secretsInPage(page, [TOKEN, KEY]), []);
  });

  await check('a call through the proxy works, then gets a 401 once the provider revokes the token', async () => {
    const call = () => fetch(`${PROXY}/proxy/me`, {
      headers: { Authorization: `Bearer ${KEY}`, 'Provider-Config-Key': 'intercom', 'Connection-Id': 'acme' },
    });
    const before = await call();
    assert.equal(before.status, 200, await before.text());
    const revoked = await fetch(`${PROVIDER}/test/revoke`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: TOKEN }),
    });
    assert.equal(revoked.status, 204);
    const after = await call();
    const body = await after.json();
    assert.equal(after.status, 424, JSON.stringify(body));
    assert.equal(body.error.code, 'needs_reauthorization');
  });

  await check('after a reload the connection needs re-authorization', async () => {
    await page.reload();
    const acme = row(intercom, 'acme');
    await acme.waitFor();
    assert.equal(await field(acme, 'Status').textContent(), 'Needs re-authorization');
    assert.notEqual((await field(acme, 'Last error').textContent()).trim(), '—');
    await acme.getByRole('button', { name: 'Re-authorize connection acme' }).waitFor();
    assert.equal(await keyInput.isVisible(), false, 'the key was asked again after a reload');
  });

  await check('screenshots, wide and narrow, with nothing wider than a narrow screen', async () => {
    await page.screenshot({ path: path.join(SCREENSHOTS, 'connections-page.png'), fullPage: true });
    await page.setViewportSize({ width: 360, height: 800 });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'connections-page-narrow.png'), fullPage: true });
    const widths = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth,
      screen: window.innerWidth,
      wider: [...document.body.querySelectorAll('*')]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth)
        .slice(0, 5)
        .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}.${e.className}`),
    }));
    assert.ok(widths.page <= widths.screen,
      `the page is ${widths.page} px wide on a ${widths.screen} px screen: ${widths.wider.join(', ')}`);
    await page.setViewportSize({ width: 1100, height: 900 });
  });

  await check('every input has a label and every button says what it does', async () => {
    const unnamed = await page.evaluate(() => {
      const visible = (e) => e.offsetParent !== null;
      const inputs = [...document.querySelectorAll('input')].filter(visible).filter((i) => i.labels.length === 0);
      const buttons = [...document.querySelectorAll('button')].filter(visible)
        .filter((b) => (b.getAttribute('aria-label') || b.textContent).trim() === '');
      return [...inputs, ...buttons].map((e) => e.outerHTML);
    });
    assert.deepEqual(unnamed, []);
  });

  await check('delete asks first: dismissed keeps it, confirmed (by keyboard) removes it', async () => {
    const acme = row(intercom, 'acme');
    const remove = acme.getByRole('button', { name: 'Delete connection acme' });
    const dismissed = expectDialog(false);
    await remove.click();
    await status.filter({ hasText: 'Kept connection acme of intercom.' }).waitFor();
    assert.match(dismissed.seen || '', /^Delete connection acme of intercom\?/);
    assert.equal(await acme.count(), 1);
    const accepted = expectDialog(true);
    await remove.focus();
    await page.keyboard.press('Enter');
    await status.filter({ hasText: 'Deleted connection acme of intercom.' }).waitFor();
    await acme.waitFor({ state: 'detached' });
    assert.ok(accepted.seen, 'no confirmation was asked');
  });

  await check('a key the proxy no longer takes is dropped and asked for again', async () => {
    await page.evaluate((item) => sessionStorage.setItem(item, 'rotated-key-0123456789-abcdef'), KEY_ITEM);
    await page.getByRole('button', { name: 'Reload connections' }).click();
    await alert.filter({ hasText: 'The proxy refused the key' }).waitFor();
    await keyInput.waitFor({ state: 'visible' });
    assert.equal(await intercom.count(), 0, 'the connections stay shown without a key');
    assert.equal(await page.evaluate((item) => sessionStorage.getItem(item), KEY_ITEM), null);
    await keyInput.fill(KEY);
    await keyInput.press('Enter');
    await intercom.waitFor();
  });

  await check('Connect goes through a connect session to the provider and back, and lists the connection', async () => {
    const form = intercom.getByRole('form', { name: 'Connect an account' });
    await form.getByLabel('Connection id').fill('beta');
    await Promise.all([
      page.waitForURL(/\/oauth\/callback\?/),
      form.getByRole('button', { name: 'Connect', exact: true }).click(),
    ]);
    assert.equal(await page.locator('h1').textContent(), 'Connected');
    await page.goto(`${PROXY}/`);
    const beta = row(intercom, 'beta');
    await beta.waitFor();
    assert.equal(await field(beta, 'Status').textContent(), 'OK');
    assert.equal(await field(beta, 'Scopes').textContent(), HOSTILE_SCOPE);
    const dom = await page.evaluate(() => ({ images: document.querySelectorAll('img').length, pwned: window.__pwned === true }));
    assert.deepEqual(dom, { images: 0, pwned: false });
    assert.deepEqual(await secretsInPage(page, [KEY, ISSUED_PREFIX]), []);
  });

  await check('the key went only to the JSON API, only in Authorization, never in a URL', async () => {
    const seen = await Promise.all(requests);
    const api = /\/(integrations|connections|connect\/sessions)(\/|\?|$)/;
    const own = seen.filter((r) => r.url.startsWith(`${PROXY}/`));
    assert.ok(own.some((r) => api.test(new URL(r.url).pathname)), 'no API call was seen');
    for (const r of seen) {
      assert.ok(!r.url.includes(KEY), `the key in a URL: ${r.url}`);
      const auth = r.headers.authorization;
      if (r.url.startsWith(`${PROXY}/`) && api.test(new URL(r.url).pathname)) {
        assert.match(auth || '', /^Bearer \S{16,}$/, `${r.method} ${r.url} without the key`);
      } else {
        assert.equal(auth, undefined, `${r.method} ${r.url} carried Authorization`);
      }
      assert.equal(r.headers.cookie, undefined, `${r.method} ${r.url} carried a cookie`);
    }
  });

  await check('forgetting the key empties sessionStorage', async () => {
    await page.getByRole('button', { name: 'Forget the key' }).click();
    await keyInput.waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  await check('no policy violation and no uncaught error', async () => {
    assert.deepEqual(violations, []);
  });
}

// Bounded: Playwright closes Chromium when the process exits.
setTimeout(() => {
  console.error(`not ok - the browser script ran over 150 s (after ${passed} checks)`);
  process.exit(1);
}, 150000).unref();

main().then(
  () => {
    console.log(`${passed} passed, 0 failed`);
  },
  (error) => {
    console.error(`not ok ${passed + 1} - ${error.check || 'setting up'}\n${error.stack || error}`);
    console.log(`${passed} passed, 1 failed`);
    process.exitCode = 1;
  },
);
