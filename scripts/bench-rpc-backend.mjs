// The RPC backend of scripts/bench-backends.sh: an echo on the Node library
// (clients/node, @broker/node), as a user would write it.
//
//   node scripts/bench-rpc-backend.mjs REDIS_URL [CONCURRENCY]
//
// Answers `bench:echo` with the request's data, at most CONCURRENCY (256)
// calls at a time, consumer group `bench`. Prints "ready" once it reads the
// stream; stops on SIGTERM / SIGINT after the calls in flight.
import { Broker } from '../clients/node/src/index.js';

const url = process.argv[2] ?? 'redis://127.0.0.1:6379';
const concurrency = Number(process.argv[3] ?? 256);
const broker = new Broker(url);
broker.rpc.handle('bench:echo', (d) => d);
await broker.rpc.start({ group: 'bench', consumer: `echo-${process.pid}`, concurrency });
console.log('ready');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await broker.rpc.stop();
  await broker.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
