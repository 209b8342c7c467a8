// payment-status scenario: the buyer's two devices both hear the payment;
// a buyer who was offline gets it back when a device reconnects.
//
//   node examples/payment-status/scenario.mjs   (while `make example NAME=payment-status` runs)

import { run, token, client, message, check, same, until, sleep } from '../lib/scenario.mjs';
import { paymentEvent, deliver, sign } from './provider.mjs';

run('payment-status', async (env) => {
  const [ws] = env.gateways;
  const post = (event, opts) => deliver(env.BACKEND_URL, env.WEBHOOK_SECRET, event, opts);
  const alice = token(env.JWT_SECRET, 'alice');

  // 1. Two devices of alice online; the provider confirms her payment.
  const phone = await client(ws, alice);
  const laptop = await client(ws, alice);
  const bob = await client(ws, token(env.JWT_SECRET, 'bob'));
  const first = paymentEvent({ buyer: 'alice', order: 'o-100', amount: 4200 });
  const res = await post(first);
  check(res.status === 200 && res.body.seq >= 1, 'the backend accepts a signed webhook', res);
  const onPhone = await message(phone, 'payment.succeeded');
  const onLaptop = await message(laptop, 'payment.succeeded');
  check(onPhone.room === 'user:alice' && onLaptop.room === 'user:alice', 'it comes through the personal room user:alice');
  check(same(onPhone.data, { payment: first.data.payment, order: 'o-100', amount: 4200, currency: 'EUR' }),
    'the phone gets payment.succeeded with the payment', onPhone.data);
  check(same(onPhone.data, onLaptop.data) && onPhone.seq === onLaptop.seq, 'the laptop gets the same message (same seq)');

  // 2. A forged webhook (wrong secret) is refused and reaches no one.
  const forged = paymentEvent({ buyer: 'alice', order: 'o-evil', amount: 1 });
  const bad = await post(forged, { signature: sign('not-the-secret', JSON.stringify(forged)) });
  check(bad.status === 401, 'a webhook with a bad signature is refused (401)', bad);
  const stale = await post(forged, { signature: sign(env.WEBHOOK_SECRET, JSON.stringify(forged), Math.floor(Date.now() / 1000) - 3600) });
  check(stale.status === 401, 'a replayed webhook signed an hour ago is refused (401)', stale);

  // 3. The provider retries the first event (its 2xx got lost): no second notice.
  const again = await post(first);
  check(again.status === 200 && again.body.duplicate === true, 'a retried event is acknowledged as a duplicate', again.body);

  // 4. Another user's payment does not reach alice, and bob gets only his.
  const bobs = paymentEvent({ buyer: 'bob', order: 'o-200', amount: 990, failed: true });
  check((await post(bobs)).status === 200, 'bob\'s failed payment is accepted');
  const onBob = await message(bob, 'payment.failed');
  check(onBob.data.order === 'o-200', 'bob hears payment.failed for his order');
  await sleep(200);
  check(phone.inbox.filter((m) => m.room === 'user:alice').length === 1 && laptop.inbox.filter((m) => m.room === 'user:alice').length === 1,
    'alice\'s devices got exactly one message: no duplicate, no forged, nothing of bob\'s',
    phone.inbox.map((m) => m.ev));

  // 5. Alice goes offline with every device; the laptop remembers its
  //    position in user:alice (what an app keeps in localStorage).
  const position = { seq: onLaptop.seq, epoch: onLaptop.epoch };
  phone.close();
  laptop.close();
  await until(async () => (await (await fetch(`${env.admins[0]}/api/users/alice/presence`)).json()).status === 'offline',
    5000, 'alice offline (admin API presence)');
  const second = paymentEvent({ buyer: 'alice', order: 'o-101', amount: 1500 });
  const res2 = await post(second);
  check(res2.status === 200 && res2.body.seq === position.seq + 1, 'a payment while alice is offline is accepted (next seq)', res2.body);

  // 6. The laptop comes back: joining its personal room with `since`
  //    replays what it missed, before the ack.
  const back = await client(ws, alice);
  const sub = await back.join('user:alice', { since: position });
  const missed = await message(back, 'payment.succeeded', { where: (m) => m.data.order === 'o-101' });
  check(missed.seq === position.seq + 1 && missed.data.payment === second.data.payment,
    'on reconnect, join user:alice with since replays the missed payment.succeeded', missed);
  check(sub.seq === missed.seq, 'the subscription is at the replayed message', { subSeq: sub.seq });

  // 7. Or, without a saved position: the personal room's history.
  const other = await client(ws, alice);
  const { messages } = await other.history('user:alice', { since: 0 });
  check(same(messages.map((m) => m.data.order), ['o-100', 'o-101']),
    'a device with no saved position reads both payments from history(user:alice)', messages.map((m) => m.data.order));

  // 8. The backend's record.
  const recorded = await (await fetch(`${env.BACKEND_URL}/payments?buyer=alice`)).json();
  check(same(recorded.map((p) => p.order), ['o-100', 'o-101']), 'the backend recorded alice\'s two payments once each');
});
