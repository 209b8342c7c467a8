// admin-broadcast backend: the operator's "announce" tool.
//
//   POST /announce {ev, data, ns?}   broker.broadcast(ev, data, {ns}) -> {nodes}
//
// The same is possible without a backend, on any gateway node's admin
// listener: POST /api/broadcast {ev, data, ns?} (docs/HTTP.md).
// A broadcast goes to every connection on every live node (with `ns`: to
// the connections that are in at least one room of that namespace, once
// each); it is not stored and has no sequence number, so a client that
// connects later does not get it.

import { Broker } from '@broker/node';
import { env, log, httpServer, onShutdown } from '../lib/backend.mjs';

const broker = new Broker(env('REDIS_URL'));

const http = httpServer({
  'POST /announce': async (req, raw) => {
    const { ev, data = null, ns } = JSON.parse(raw.toString() || '{}');
    if (typeof ev !== 'string' || !ev) return [400, { error: 'ev is required' }];
    const nodes = await broker.broadcast(ev, data, ns ? { ns } : {});
    log(`broadcast ${ev}${ns ? ` to namespace ${ns}` : ' to everyone'}: ${nodes} node(s) told`);
    return [200, { nodes }];
  },
});

onShutdown(async () => {
  http.server.close();
  await broker.close();
});
http.ready();
