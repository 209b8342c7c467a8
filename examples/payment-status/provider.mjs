#!/usr/bin/env node
// A simulated payment provider: POSTs a signed `payment.succeeded` (or
// `payment.failed`) event to the backend's webhook, as Stripe, Adyen or
// Mollie would once the buyer has paid.
//
//   node examples/payment-status/provider.mjs --buyer alice --order o-17 --amount 4200 [--failed]
//
// Signature: header `X-Payment-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
// The URL and the shared secret come from the running example (env.json),
// or BACKEND_URL and WEBHOOK_SECRET.

import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

/** The header value signing `body` (a string) at time `t` (Unix seconds). */
export function sign(secret, body, t = Math.floor(Date.now() / 1000)) {
  const v1 = crypto.createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  return `t=${t},v1=${v1}`;
}

let counter = 0;

/** A provider event for one payment. */
export function paymentEvent({ buyer, order, amount, currency = 'EUR', failed = false, id }) {
  const n = `${Date.now().toString(36)}${(counter++).toString(36)}`;
  return {
    id: id ?? `evt_${n}`,
    type: failed ? 'payment.failed' : 'payment.succeeded',
    created: Math.floor(Date.now() / 1000),
    data: { payment: `pay_${n}`, order, buyer, amount, currency },
  };
}

/** POSTs `event` to `<backendUrl>/payments/webhook`; resolves to `{status, body}`. */
export async function deliver(backendUrl, secret, event, { signature } = {}) {
  const body = JSON.stringify(event);
  const res = await fetch(`${backendUrl}/payments/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-payment-signature': signature ?? sign(secret, body) },
    body,
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { parseArgs } = await import('node:util');
  const { values } = parseArgs({
    options: {
      buyer: { type: 'string', default: 'alice' },
      order: { type: 'string', default: 'o-1' },
      amount: { type: 'string', default: '4200' },
      currency: { type: 'string', default: 'EUR' },
      failed: { type: 'boolean', default: false },
    },
  });
  let { BACKEND_URL: url, WEBHOOK_SECRET: secret } = process.env;
  if (!url || !secret) {
    const { exampleEnv } = await import('../lib/scenario.mjs');
    const e = exampleEnv('payment-status');
    url = e.BACKEND_URL;
    secret = e.WEBHOOK_SECRET;
  }
  const event = paymentEvent({ ...values, amount: Number(values.amount) });
  const res = await deliver(url, secret, event);
  console.log(`POST ${url}/payments/webhook ${event.type} for ${values.buyer}: ${res.status} ${JSON.stringify(res.body)}`);
  process.exit(res.status === 200 ? 0 : 1);
}
