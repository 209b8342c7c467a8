// payment-status backend: receives the payment provider's webhooks and
// tells the buyer, on every device, with emitToUser.
//
//   POST /payments/webhook   a provider event, signed (X-Payment-Signature)
//   GET  /payments?buyer=x   what was recorded for a buyer
//
// Every accepted event is appended to DATA_DIR/payments.jsonl; an event id
// seen before is answered 200 again without a second notice (providers
// retry until they get a 2xx, so deliveries come at least once).

import crypto from 'node:crypto';
import path from 'node:path';
import { Broker } from '@broker/node';
import { env, log, httpServer, jsonLines, onShutdown } from '../lib/backend.mjs';

const SECRET = env('WEBHOOK_SECRET');
const TOLERANCE_S = 300; // a signature older than this is refused (replays)

const broker = new Broker(env('REDIS_URL'));
const store = jsonLines(path.join(env('DATA_DIR'), 'payments.jsonl'));
const seen = new Set(store.readAll().map((p) => p.event));

/** Checks `t=<ts>,v1=<hex>` against the raw body, in constant time. */
function verified(raw, header) {
  const parts = Object.fromEntries(String(header || '').split(',').map((kv) => kv.split('=', 2)));
  const t = Number(parts.t);
  if (!Number.isFinite(t) || Math.abs(Date.now() / 1000 - t) > TOLERANCE_S || !parts.v1) return false;
  const expected = crypto.createHmac('sha256', SECRET).update(`${parts.t}.`).update(raw).digest('hex');
  const a = Buffer.from(expected);
  const b = Buffer.from(parts.v1);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

const http = httpServer({
  'POST /payments/webhook': async (req, raw) => {
    if (!verified(raw, req.headers['x-payment-signature'])) {
      log('webhook refused: bad signature');
      return [401, { error: 'bad signature' }];
    }
    const event = JSON.parse(raw.toString('utf8'));
    if (seen.has(event.id)) {
      log(`webhook ${event.id} again: already handled`);
      return [200, { duplicate: true }];
    }
    const { payment, order, buyer, amount, currency } = event.data ?? {};
    if (!buyer || !['payment.succeeded', 'payment.failed'].includes(event.type)) {
      return [200, { ignored: true }]; // 2xx, or the provider sends it forever
    }
    // Tell the buyer, then record: a crash in between makes the provider's
    // retry notify again (at least once; clients can tell by `payment`).
    const seq = await broker.emitToUser(buyer, event.type, { payment, order, amount, currency });
    store.append({ event: event.id, type: event.type, payment, order, buyer, amount, currency, seq, at: Date.now() });
    seen.add(event.id);
    log(`${event.type} ${payment} (${amount} ${currency}, order ${order}) -> user:${buyer} seq ${seq}`);
    return [200, { seq }];
  },
  'GET /payments': async (req, raw, url) => {
    const buyer = url.searchParams.get('buyer');
    return [200, store.readAll().filter((p) => !buyer || p.buyer === buyer)];
  },
});

onShutdown(async () => {
  http.server.close();
  await broker.close();
});
http.ready();
