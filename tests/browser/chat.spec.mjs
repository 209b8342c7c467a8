// End-to-end test of the demo chat page (gateway/static) in headless Debian
// Chromium, driven by playwright-core. Run by scripts/browser-test.sh, which
// starts Redis and two gateway nodes and passes them in:
//
//   GATEWAYS=http://127.0.0.1:P1,http://127.0.0.1:P2 node tests/browser/chat.spec.mjs
//
// Optional: CHROMIUM (default /usr/bin/chromium), ARTIFACTS (default
// target/browser-artifacts), DEADLINE_MS (default 150000), PAGE_SOURCE
// (auto: the gateway's GET / when it serves the current files, else the
// static server of static-server.mjs; or force `gateway` / `static`). With
// GATEWAY_PIDS, GATEWAY_ADMINS (host:port list), GATEWAY_BIN,
// GATEWAY_CONFIG, REDIS_URL and RESTART_PIDFILE it also restarts node 2
// (SIGTERM: close 1012) and checks that bob's page reconnects, gets a new
// dev token from the new process and catches up on what he missed.
//
// The scenario runs twice, once per protocol of the page: the broker
// protocol (/ws with broker-client.js) and Socket.IO (/socket.io/ with the
// vendored socket.io-client, the page opened with ?proto=socketio; users
// alice-io, bob-io, carol-io). alice uses node 1 and bob node 2: they must
// see each other online, bob must see alice typing and her message (whose
// text holds HTML that must stay text), and a later visitor (carol) must
// get both messages from history. After the restart of node 2 (once per
// protocol) messages must flow both ways again. In the Socket.IO run a
// broker-protocol page (dave-ws) also chats with the Socket.IO pages.
// Prints one line per check (prefixed [broker] / [socketio]) and a closing
// "N passed, N failed"; exits non-zero on any failure. PROTOS=socketio (or
// =broker) runs one protocol only.

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
const deadlineMs = Number(process.env.DEADLINE_MS || 150000);
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

/** One run of the scenario per protocol the page speaks. */
const SCENARIOS = [
  { proto: 'broker', suffix: '' },
  { proto: 'socketio', suffix: '-io' },
].filter((sc) => !process.env.PROTOS || process.env.PROTOS.split(',').includes(sc.proto));

if (gateways.length < 2) {
  console.error('set GATEWAYS=http://host:port,http://host:port (two gateway nodes)');
  process.exit(2);
}

let passed = 0;
let failed = 0;
let prefix = ''; // the scenario's protocol, in front of each check's name

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
    report(prefix + name);
  } catch (err) {
    report(prefix + name, err);
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

/** The page URL with `proto` set (the page's mode switch). */
function withProto(url, proto) {
  const u = new URL(url);
  u.searchParams.set('proto', proto);
  return u.toString();
}

async function openUser(browser, url, user, proto) {
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
  await page.goto(withProto(url, proto), { waitUntil: 'load', timeout: WAIT });
  await page.waitForSelector('html[data-ready="1"]', { state: 'attached', timeout: WAIT });
  const selected = await page.inputValue('#proto');
  assert(selected === proto, `?proto=${proto} selected "${selected}" on the login form`);
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

/** Stops gateway node 2 (SIGTERM: it closes its clients with 1012): the
 * first process, or the one the last startNode2() started. */
async function stopNode2() {
  const pid = restarted ? restarted.pid : restart.pids[1];
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

/** The chat scenario with every page in one protocol (`proto`). Each user
 * it opens is added to `users` (for the final checks and the failure
 * screenshots). */
async function scenario(browser, urls, { proto, suffix }, users) {
  const socketio = proto === 'socketio';
  const [ALICE, BOB, CAROL] = ['alice', 'bob', 'carol'].map((n) => `${n}${suffix}`);
  const ALICE_TEXT = `hello ${BOB} ${XSS} & <b>bold</b>`;
  const BOB_TEXT = `hi ${ALICE}, all good`;
  const AWAY_TEXT = `sent while node 2 was restarting (${proto})`;
  const BACK_TEXT = `${BOB} is back (${proto})`;
  const WELCOME_TEXT = `welcome back, ${BOB} (${proto})`;
  const shotName = (n) => `${proto}-${n}`;
  /** The host (or node) after " on " in a page's connection detail. */
  const where = async (u) => (await u.page.textContent('#conn-detail')).split(' on ')[1].split(' ')[0];

  let alice;
  let bob;
  await check(`the demo page loads and ${ALICE} connects to node 1`, async () => {
    alice = await openUser(browser, urls[0], ALICE, proto);
    users.push(alice);
    const detail = await alice.page.textContent('#conn-detail');
    assert(detail.startsWith(`${ALICE} on `), `connection detail says "${detail}"`);
    if (socketio) assert(/via socket\.io/.test(detail), `connection detail says "${detail}"`);
  }, true);
  await shot(alice, shotName('01-alice-connected'));
  await check(`${BOB} connects to node 2`, async () => {
    bob = await openUser(browser, urls[1], BOB, proto);
    users.push(bob);
  }, true);
  await check('the two pages are served by different gateway nodes', async () => {
    const [a, b] = [await where(alice), await where(bob)];
    assert(a !== b, `both on one node: "${a}" / "${b}"`);
  });
  if (socketio) {
    await check('socket.io-client upgrades from long-polling to WebSocket', async () => {
      for (const u of [alice, bob]) {
        await u.page.waitForFunction(
          () => document.getElementById('conn-detail').textContent.endsWith('(websocket)'),
          null,
          { timeout: WAIT },
        );
      }
    });
  }
  await check(`${ALICE} sees ${BOB} online (presence join event)`, async () => {
    await waitOnline(alice.page, BOB);
    const list = await onlineUsers(alice.page);
    assert(list.includes(ALICE) && list.includes(BOB), `${ALICE}'s list: ${list}`);
  });
  await check(`${BOB} sees ${ALICE} online (presence request)`, async () => {
    await waitOnline(bob.page, ALICE);
    // The pages of an earlier scenario were closed: their leaves may still
    // be on the way.
    await bob.page.waitForFunction(() => document.getElementById('online-count').textContent === '2', null, { timeout: WAIT })
      .catch(() => {});
    const count = await bob.page.textContent('#online-count');
    assert(count === '2', `online count ${count}: ${await onlineUsers(bob.page)}`);
  });
  await check(`${ALICE} types: ${BOB} sees the typing indicator`, async () => {
    await alice.page.locator('#message').pressSequentially('hel', { delay: 30, timeout: WAIT });
    await bob.page.waitForFunction(
      (who) => document.getElementById('typing').textContent.includes(`${who} is typing`),
      ALICE,
      { timeout: WAIT },
    );
    const aliceTyping = await alice.page.textContent('#typing');
    assert(aliceTyping === '', `${ALICE} sees her own typing: "${aliceTyping}"`);
  });
  await shot(bob, shotName('02-bob-sees-typing'));
  await check(`${ALICE} sends a message: ${BOB} sees it as plain text`, async () => {
    await alice.page.fill('#message', ALICE_TEXT);
    await alice.page.click('#send');
    await waitLogText(bob.page, ALICE_TEXT);
    await waitLogText(alice.page, ALICE_TEXT);
    const who = await bob.page.$$eval('#log li.msg .who', (items) => items.map((n) => n.textContent));
    assert(who.includes(ALICE), `senders on ${BOB}'s page: ${who}`);
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
  await shot(bob, shotName('03-bob-got-message'));
  await check(`${BOB} answers: ${ALICE} sees it`, async () => {
    await bob.page.fill('#message', BOB_TEXT);
    await bob.page.press('#message', 'Enter');
    await waitLogText(alice.page, BOB_TEXT);
  });
  await shot(alice, shotName('04-alice-conversation'));

  let carol;
  await check(`${CAROL} joins later and gets both messages from history`, async () => {
    carol = await openUser(browser, urls[0], CAROL, proto);
    users.push(carol);
    await waitLogText(carol.page, ALICE_TEXT);
    await waitLogText(carol.page, BOB_TEXT);
    const texts = await logTexts(carol.page);
    assert(texts.indexOf(ALICE_TEXT) < texts.indexOf(BOB_TEXT), `history out of order: ${JSON.stringify(texts)}`);
    assert(!texts.some((t) => t === '{}'), 'typing events leaked into the log');
    const imgs = await carol.page.$$eval('img', (items) => items.length);
    assert(imgs === 0, `${CAROL}'s page has ${imgs} <img> element(s)`);
  });
  if (carol) await shot(carol, shotName('05-carol-history'));
  await check(`${BOB} sees ${CAROL} arrive and leave (across nodes)`, async () => {
    await waitOnline(bob.page, CAROL);
    await carol.page.click('#logout');
    await waitOnline(bob.page, CAROL, false);
    const state = await carol.page.getAttribute('#conn-state', 'data-state');
    assert(state === 'idle', `${CAROL}'s badge after disconnect: ${state}`);
  });

  if (socketio) {
    // Both protocols in one room: a /ws page on node 1 and the Socket.IO
    // pages read each other's messages, live and from history.
    const DAVE = 'dave-ws';
    const DAVE_TEXT = `${DAVE} here, on /ws`;
    let dave;
    await check(`a broker-protocol page (${DAVE}) and the Socket.IO pages chat in one room`, async () => {
      dave = await openUser(browser, urls[0], DAVE, 'broker');
      users.push(dave);
      await waitLogText(dave.page, BOB_TEXT); // Socket.IO messages in /ws history
      await waitOnline(bob.page, DAVE);
      await dave.page.fill('#message', DAVE_TEXT);
      await dave.page.press('#message', 'Enter');
      await waitLogText(bob.page, DAVE_TEXT);
      await waitLogText(alice.page, DAVE_TEXT);
      await dave.page.click('#logout');
      await waitOnline(alice.page, DAVE, false);
    });
  }

  if (canRestart) {
    await check('node 2 restarts: bob sees reconnecting, then catches up', async () => {
      await stopNode2();
      await bob.page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: WAIT });
      await shot(bob, shotName('06-bob-reconnecting'));
      await alice.page.fill('#message', AWAY_TEXT);
      await alice.page.click('#send');
      await waitLogText(alice.page, AWAY_TEXT);
      await startNode2();
      await bob.page.waitForSelector('#conn-state[data-state="connected"]', { timeout: 25000 });
      await waitLogText(bob.page, AWAY_TEXT);
      const texts = await logTexts(bob.page);
      const copies = texts.filter((t) => t === AWAY_TEXT).length;
      assert(copies === 1, `${BOB} shows the missed message ${copies} times`);
      assert(texts.filter((t) => t === ALICE_TEXT).length === 1, 'an earlier message shows twice');
      const activity = await bob.page.textContent('#activity');
      assert(/caught up/.test(activity), `${BOB}'s activity does not say he caught up: ${activity}`);
      const node2 = socketio ? new URL(gateways[1]).host : 'gw-bt-2';
      assert(activity.includes(`reconnected to ${node2}`), `${BOB}'s activity: ${activity}`);
      // The new process has a new dev-token secret: the old token is
      // refused (close 4001 on /ws, CONNECT_ERROR `unauthorized` on
      // Socket.IO) and the page gets a new one by itself.
      assert(/token refused/.test(activity), `${BOB}'s old token was not refused: ${activity}`);
      await waitOnline(alice.page, BOB);
      await waitOnline(bob.page, ALICE);
    });
    if (socketio) {
      // Socket.IO's connection state recovery: the CONNECT carried the old
      // pid and the last offset, and the room's history still held the
      // missed message, so the server answers with the same pid.
      await check('the Socket.IO session was recovered (socket.recovered)', async () => {
        const activity = await bob.page.textContent('#activity');
        assert(/session recovered/.test(activity), `${BOB}'s activity: ${activity}`);
      });
    }
    await check('after the restart messages flow both ways again', async () => {
      await bob.page.fill('#message', BACK_TEXT);
      await bob.page.press('#message', 'Enter');
      await waitLogText(alice.page, BACK_TEXT);
      await alice.page.fill('#message', WELCOME_TEXT);
      await alice.page.press('#message', 'Enter');
      await waitLogText(bob.page, WELCOME_TEXT);
      const texts = await logTexts(bob.page);
      assert(texts.filter((t) => t === WELCOME_TEXT).length === 1, `${BOB} shows the new message twice`);
    });
  } else {
    console.log('# skipped the node restart check (no GATEWAY_PIDS etc.)');
  }
  await shot(alice, shotName('07-alice-final'));
  await shot(bob, shotName('08-bob-final'));
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
    for (const sc of SCENARIOS) {
      prefix = `[${sc.proto}] `;
      console.log(`# ${sc.proto}: the page's ${sc.proto === 'socketio' ? 'Socket.IO (/socket.io/)' : 'broker protocol (/ws)'} mode`);
      const before = users.length;
      await scenario(browser, urls, sc, users);
      // Their connections close: the next scenario starts in an empty room.
      for (const u of users.slice(before)) await u.context.close();
    }
    prefix = '';
    await check('no uncaught errors on any page', async () => {
      for (const u of users) {
        assert(u.pageErrors.length === 0, `${u.user}: ${u.pageErrors.join('; ')}`);
      }
    });
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
