// End-to-end test of the demo chat page (gateway/static) in headless Debian
// Chromium, driven by playwright-core. Run by scripts/browser-test.sh, which
// starts Redis and two gateway nodes and passes them in:
//
//   GATEWAYS=http://127.0.0.1:P1,http://127.0.0.1:P2 node tests/browser/chat.spec.mjs
//
// Optional: CHROMIUM (default /usr/bin/chromium), ARTIFACTS (default
// target/browser-artifacts), DEADLINE_MS (default 90000), PAGE_SOURCE
// (auto: the gateway's GET / when it serves the current files, else the
// static server of static-server.mjs; or force `gateway` / `static`). With
// GATEWAY_PIDS, GATEWAY_ADMINS (host:port list), GATEWAY_BIN,
// GATEWAY_CONFIG, REDIS_URL and RESTART_PIDFILE it also restarts node 2
// (SIGTERM: close 1012) and checks that bob's page reconnects, gets a new
// dev token from the new process and catches up on what he missed.
//
// alice uses node 1 and bob node 2: they must see each other online, bob
// must see alice typing and her message (whose text holds HTML that must
// stay text), and a later visitor (carol) must get both messages from
// history. Prints one line per check and a closing "N passed, N failed";
// exits non-zero on any failure.

import { chromium } from 'playwright-core';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { startStaticServer, ROUTES } from './static-server.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const gateways = (process.env.GATEWAYS || '').split(',').map((s) => s.trim().replace(/\/$/, '')).filter(Boolean);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const artifacts = resolve(process.env.ARTIFACTS || join(root, 'target', 'browser-artifacts'));
const deadlineMs = Number(process.env.DEADLINE_MS || 90000);
const WAIT = 15000; // the longest any single wait may take

const restart = {
  pids: (process.env.GATEWAY_PIDS || '').split(',').filter(Boolean).map(Number),
  admins: (process.env.GATEWAY_ADMINS || '').split(',').filter(Boolean),
  bin: process.env.GATEWAY_BIN,
  config: process.env.GATEWAY_CONFIG,
  redis: process.env.REDIS_URL,
  pidfile: process.env.RESTART_PIDFILE,
};
const canRestart = restart.pids.length >= 2 && restart.admins.length >= 2
  && restart.bin && restart.config && restart.redis && restart.pidfile;
let restarted = null; // the node-2 process this script started

const XSS = '<img src=x onerror=alert(1)>';
const ALICE_TEXT = `hello bob ${XSS} & <b>bold</b>`;
const BOB_TEXT = 'hi alice, all good';
const AWAY_TEXT = 'sent while node 2 was restarting';

if (gateways.length < 2) {
  console.error('set GATEWAYS=http://host:port,http://host:port (two gateway nodes)');
  process.exit(2);
}

let passed = 0;
let failed = 0;

function report(name, err) {
  if (err) {
    failed += 1;
    console.log(`not ok - ${name}: ${err.message.split('\n')[0]}`);
  } else {
    passed += 1;
    console.log(`ok - ${name}`);
  }
}

/** Runs one check; a failure is recorded and the run goes on when
 * `critical` is false, else it stops the run (later checks need it). */
async function check(name, fn, critical = false) {
  try {
    await fn();
    report(name);
  } catch (err) {
    report(name, err);
    if (critical) throw new Error(`stopping: ${name} failed`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** Where each gateway's demo page is: GET / when the gateway serves the
 * current page files, else the fallback static server with ?gw=.
 * PAGE_SOURCE=gateway or =static forces one. */
async function pageUrls() {
  const source = process.env.PAGE_SOURCE || 'auto';
  const useStatic = async (why) => {
    const fallback = await startStaticServer(0);
    console.log(`# ${why}: using the static server at ${fallback.url}`);
    const urls = gateways.map((gw) => `${fallback.url}/?gw=${new URL(gw).host}`);
    return { urls, server: fallback.server };
  };
  if (source === 'static') return useStatic('PAGE_SOURCE=static');
  const served = [];
  for (const gw of gateways) {
    let ok = false;
    try {
      const resp = await fetch(`${gw}/`, { signal: AbortSignal.timeout(3000) });
      ok = resp.ok && (await resp.text()).includes('data-broker-demo');
    } catch {
      ok = false;
    }
    served.push(ok);
  }
  if (!served.every(Boolean) && source !== 'gateway') {
    return useStatic('the gateways do not serve the demo page');
  }
  // The gateway embeds the files at build time: a binary built before the
  // last change of gateway/static or clients/js/dist serves old ones.
  const stale = [];
  for (const gw of gateways) {
    for (const [path, [file, type]] of Object.entries(ROUTES)) {
      try {
        const resp = await fetch(`${gw}${path}`, { signal: AbortSignal.timeout(3000) });
        const body = await resp.text();
        const want = await readFile(file, 'utf8');
        const ctype = resp.headers.get('content-type') || '';
        if (!resp.ok) stale.push(`${gw}${path}: HTTP ${resp.status}`);
        else if (body !== want) stale.push(`${gw}${path} differs from ${file.slice(root.length + 1)}`);
        else if (ctype.split(';')[0] !== type.split(';')[0]) stale.push(`${gw}${path}: content-type ${ctype}`);
      } catch (err) {
        stale.push(`${gw}${path}: ${err.message}`);
      }
    }
  }
  await check('the gateways serve the current page files (rebuild broker-gateway if not)', async () => {
    assert(stale.length === 0, stale.join('; '));
  });
  if (stale.length && source !== 'gateway') return useStatic('the gateways serve old page files');
  console.log('# the gateways serve the demo page at GET /');
  return { urls: gateways.map((gw) => `${gw}/`), server: null };
}

async function openUser(browser, url, user) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const state = { user, page, context, pageErrors: [], dialogs: [], consoleErrors: [] };
  page.on('pageerror', (err) => state.pageErrors.push(err.message));
  page.on('dialog', (dialog) => {
    state.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error') state.consoleErrors.push(msg.text());
  });
  await page.goto(url, { waitUntil: 'load', timeout: WAIT });
  await page.waitForSelector('html[data-ready="1"]', { state: 'attached', timeout: WAIT });
  await page.fill('#user-name', user);
  await page.click('#login-button');
  await page.waitForSelector('#conn-state[data-state="connected"]', { timeout: WAIT });
  await page.waitForSelector('#room-list button[data-room="chat:lobby"]', { timeout: WAIT });
  return state;
}

async function onlineUsers(page) {
  return page.$$eval('#online li', (items) => items.map((li) => li.dataset.user));
}

async function waitOnline(page, user, present = true) {
  await page.waitForFunction(
    ([u, want]) => Boolean(document.querySelector(`#online li[data-user="${u}"]`)) === want,
    [user, present],
    { timeout: WAIT },
  );
}

async function logTexts(page) {
  return page.$$eval('#log li.msg .text', (items) => items.map((n) => n.textContent));
}

async function waitLogText(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#log li.msg .text')].some((n) => n.textContent === t),
    text,
    { timeout: WAIT },
  );
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what, pred, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/** Stops gateway node 2 (SIGTERM: it closes its clients with 1012). */
async function stopNode2() {
  const pid = restart.pids[1];
  process.kill(pid, 'SIGTERM');
  await until('node 2 exits after SIGTERM', () => !alive(pid), 15000);
}

/** Starts node 2 again on the same addresses, with the same node id. */
async function startNode2() {
  const listen = new URL(gateways[1]).host;
  const logPath = `${restart.pidfile}.log`;
  const fd = openSync(logPath, 'a');
  restarted = spawn(restart.bin, ['--config', restart.config], {
    env: {
      ...process.env,
      BROKER_LISTEN: listen,
      BROKER_ADMIN_LISTEN: restart.admins[1],
      BROKER_REDIS__URL: restart.redis,
      BROKER_NODE_ID: 'gw-bt-2',
    },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  await writeFile(restart.pidfile, `${restarted.pid}\n`);
  await until('restarted node 2 is ready', async () => {
    try {
      const resp = await fetch(`${gateways[1]}/readyz`, { signal: AbortSignal.timeout(1000) });
      return resp.ok;
    } catch {
      return false;
    }
  }, 20000);
}

async function shot(state, name) {
  await state.page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true, timeout: WAIT });
}

async function main() {
  await mkdir(artifacts, { recursive: true });
  const { urls, server } = await pageUrls();
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: WAIT,
    // Playwright gives every launch a fresh, empty --user-data-dir and
    // adds --headless itself; the rest keeps Chromium off the network.
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const users = [];
  try {
    let alice;
    let bob;
    await check('the demo page loads and alice connects to node 1', async () => {
      alice = await openUser(browser, urls[0], 'alice');
      users.push(alice);
      const detail = await alice.page.textContent('#conn-detail');
      assert(/alice on /.test(detail), `connection detail says "${detail}"`);
    }, true);
    await shot(alice, '01-alice-connected');
    await check('bob connects to node 2', async () => {
      bob = await openUser(browser, urls[1], 'bob');
      users.push(bob);
    }, true);
    await check('the two pages are served by different gateway nodes', async () => {
      const a = await alice.page.textContent('#conn-detail');
      const b = await bob.page.textContent('#conn-detail');
      assert(a.split(' on ')[1] !== b.split(' on ')[1], `both on one node: "${a}" / "${b}"`);
    });
    await check('alice sees bob online (presence join event)', async () => {
      await waitOnline(alice.page, 'bob');
      const list = await onlineUsers(alice.page);
      assert(list.includes('alice') && list.includes('bob'), `alice's list: ${list}`);
    });
    await check('bob sees alice online (presence request)', async () => {
      await waitOnline(bob.page, 'alice');
      const count = await bob.page.textContent('#online-count');
      assert(count === '2', `online count ${count}`);
    });
    await check('alice types: bob sees the typing indicator', async () => {
      await alice.page.locator('#message').pressSequentially('hel', { delay: 30, timeout: WAIT });
      await bob.page.waitForFunction(
        () => document.getElementById('typing').textContent.includes('alice is typing'),
        null,
        { timeout: WAIT },
      );
      const aliceTyping = await alice.page.textContent('#typing');
      assert(aliceTyping === '', `alice sees her own typing: "${aliceTyping}"`);
    });
    await shot(bob, '02-bob-sees-typing');
    await check('alice sends a message: bob sees it as plain text', async () => {
      await alice.page.fill('#message', ALICE_TEXT);
      await alice.page.click('#send');
      await waitLogText(bob.page, ALICE_TEXT);
      await waitLogText(alice.page, ALICE_TEXT);
      const who = await bob.page.$$eval('#log li.msg .who', (items) => items.map((n) => n.textContent));
      assert(who.includes('alice'), `senders on bob's page: ${who}`);
    });
    await check('the message HTML created no element and ran nothing', async () => {
      for (const u of [alice, bob]) {
        const imgs = await u.page.$$eval('img', (items) => items.length);
        assert(imgs === 0, `${u.user}'s page has ${imgs} <img> element(s)`);
        const bold = await u.page.$$eval('#log b', (items) => items.length);
        assert(bold === 0, `${u.user}'s page has a <b> element in the log`);
        assert(u.dialogs.length === 0, `${u.user} got a dialog: ${u.dialogs}`);
      }
    });
    await check('the typing indicator clears when the message arrives', async () => {
      await bob.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: WAIT });
    });
    await shot(bob, '03-bob-got-message');
    await check('bob answers: alice sees it', async () => {
      await bob.page.fill('#message', BOB_TEXT);
      await bob.page.press('#message', 'Enter');
      await waitLogText(alice.page, BOB_TEXT);
    });
    await shot(alice, '04-alice-conversation');

    let carol;
    await check('carol joins later and gets both messages from history', async () => {
      carol = await openUser(browser, urls[0], 'carol');
      users.push(carol);
      await waitLogText(carol.page, ALICE_TEXT);
      await waitLogText(carol.page, BOB_TEXT);
      const texts = await logTexts(carol.page);
      assert(texts.indexOf(ALICE_TEXT) < texts.indexOf(BOB_TEXT), `history out of order: ${JSON.stringify(texts)}`);
      assert(!texts.some((t) => t === '{}'), 'typing events leaked into the log');
      const imgs = await carol.page.$$eval('img', (items) => items.length);
      assert(imgs === 0, `carol's page has ${imgs} <img> element(s)`);
    });
    if (carol) await shot(carol, '05-carol-history');
    await check('bob sees carol arrive and leave (across nodes)', async () => {
      await waitOnline(bob.page, 'carol');
      await carol.page.click('#logout');
      await waitOnline(bob.page, 'carol', false);
      const state = await carol.page.getAttribute('#conn-state', 'data-state');
      assert(state === 'idle', `carol's badge after disconnect: ${state}`);
    });
    if (canRestart) {
      await check('node 2 restarts: bob sees reconnecting, then catches up', async () => {
        await stopNode2();
        await bob.page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: WAIT });
        await shot(bob, '06-bob-reconnecting');
        await alice.page.fill('#message', AWAY_TEXT);
        await alice.page.click('#send');
        await waitLogText(alice.page, AWAY_TEXT);
        await startNode2();
        await bob.page.waitForSelector('#conn-state[data-state="connected"]', { timeout: 25000 });
        await waitLogText(bob.page, AWAY_TEXT);
        const texts = await logTexts(bob.page);
        const copies = texts.filter((t) => t === AWAY_TEXT).length;
        assert(copies === 1, `bob shows the missed message ${copies} times`);
        assert(texts.filter((t) => t === ALICE_TEXT).length === 1, 'an earlier message shows twice');
        const activity = await bob.page.textContent('#activity');
        assert(/caught up/.test(activity), `bob's activity does not say he caught up: ${activity}`);
        assert(/reconnected to gw-bt-2/.test(activity), `bob's activity: ${activity}`);
        // The new process has a new dev-token secret: the old token is
        // refused (4001) and the page gets a new one by itself.
        assert(/token refused/.test(activity), `bob's old token was not refused: ${activity}`);
        await waitOnline(alice.page, 'bob');
        await waitOnline(bob.page, 'alice');
      });
    } else {
      console.log('# skipped the node restart check (no GATEWAY_PIDS etc.)');
    }
    await check('no uncaught errors on any page', async () => {
      for (const u of users) {
        assert(u.pageErrors.length === 0, `${u.user}: ${u.pageErrors.join('; ')}`);
      }
    });
    await shot(alice, '07-alice-final');
    await shot(bob, '08-bob-final');
  } catch (err) {
    if (!/^stopping:/.test(err.message)) report('the run', err);
    else console.log(`# ${err.message}`);
    for (const u of users) {
      await shot(u, `failure-${u.user}`).catch(() => {});
      if (u.consoleErrors.length) console.log(`# ${u.user} console errors: ${u.consoleErrors.join(' | ')}`);
    }
  } finally {
    await browser.close().catch(() => {});
    if (server) server.close();
    if (restarted && restarted.exitCode === null) restarted.kill('SIGTERM');
  }
}

const overall = setTimeout(() => {
  console.log(`not ok - the whole run took longer than ${deadlineMs} ms`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, deadlineMs);

await main();
clearTimeout(overall);
console.log(`# screenshots in ${artifacts}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
