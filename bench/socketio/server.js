// The peer: one Socket.IO 4 node with @socket.io/redis-adapter on a plain
// Redis, written the way the NestJS + Socket.IO + Redis tutorials write
// their gateway (without NestJS). Run two on the same Redis, like our two
// gateway nodes: the adapter relays room broadcasts between the nodes over
// Redis Pub/Sub.
//
//   PORT=3001 NODE_ID=sio-1 REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=s node server.js
//
// Auth: an HS256 JWT (claims sub, exp) in the handshake, `auth.token` or
// the `token` query parameter; refused with an `unauthorized` error.
// Events, each answered through the ack callback:
//   join {room}                   -> {room, count}   (after Redis answered)
//   leave {room}                  -> {}
//   pub {room, ev, data, others}  -> {seq}           seq from INCR room:seq:<room>,
//                                                    then 'msg' {room, ev, data, seq, ts, from}
//                                                    to the room (others: but the sender)
//   presence {room}               -> {users, count}
// Errors are acked as {error: 'not_member' | 'invalid_room' | 'internal'}.
// GET /rss answers {rss, conns, cpu_us, node} for the load driver (memory
// per connection, connections back to 0 after closing, CPU time used).

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient, defineScript } = require('redis');
const { createSecretKey } = require('node:crypto');
const jwt = require('jsonwebtoken');

const PORT = Number(process.env.PORT || 3001);
const NODE_ID = process.env.NODE_ID || `sio-${PORT}`;
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const SECRET = process.env.JWT_SECRET;
if (!SECRET) {
  console.error('JWT_SECRET is not set');
  process.exit(1);
}
// The secret as a KeyObject: given a string, jsonwebtoken first tries to
// parse it as a PEM public key, about 0.3 ms of CPU per handshake (most
// of the connect storm's server time); one line avoids it.
const KEY = createSecretKey(Buffer.from(SECRET));

// Presence as the tutorials keep it: the set presence:<room> of users in
// the room, and per user a count of their connections in it (hash
// presence:conns:<room>), so a user with two tabs stays present until the
// last one leaves. The tutorials' check-then-act (HINCRBY, then SREM when
// it reached 0, in two round trips) loses or keeps users when one user's
// connections on two nodes join and leave the same room at once (the
// churn scenario showed it); so a join is one MULTI and a leave one Lua
// script, as a careful implementation does. One round trip each.
const presenceLeave = defineScript({
  NUMBER_OF_KEYS: 2,
  SCRIPT: `
    local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
    if n <= 0 then
      redis.call('HDEL', KEYS[1], ARGV[1])
      redis.call('SREM', KEYS[2], ARGV[1])
    end
    return n`,
  transformArguments: (room, user) => [`presence:conns:${room}`, `presence:${room}`, user],
  transformReply: (n) => n,
});

async function main() {
  const redis = createClient({ url: REDIS_URL, scripts: { presenceLeave } });
  // The adapter's own pair: one to publish, one in subscriber mode.
  const pub = createClient({ url: REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([redis.connect(), pub.connect(), sub.connect()]);

  const server = http.createServer((req, res) => {
    if (req.url === '/rss') {
      const { user: u, system } = process.cpuUsage();
      const body = { rss: process.memoryUsage().rss, conns: io.engine.clientsCount, cpu_us: u + system, node: NODE_ID };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  // WebSocket only: no long-polling first, the fastest configuration.
  const io = new Server(server, {
    transports: ['websocket'],
    adapter: createAdapter(pub, sub),
    serveClient: false,
  });

  // Auth by JWT in the handshake.
  io.use((socket, next) => {
    const token = socket.handshake.auth?.token || socket.handshake.query?.token;
    try {
      const claims = jwt.verify(String(token || ''), KEY, { algorithms: ['HS256'] });
      if (typeof claims.sub !== 'string' || !claims.sub || typeof claims.exp !== 'number') {
        throw new Error('claims');
      }
      socket.data.user = claims.sub;
      next();
    } catch {
      next(new Error('unauthorized'));
    }
  });

  io.on('connection', (socket) => {
    const user = socket.data.user;
    socket.join(`user:${user}`); // the personal room, as the tutorials do

    const addPresence = async (room) => {
      const [, , count] = await redis
        .multi()
        .hIncrBy(`presence:conns:${room}`, user, 1)
        .sAdd(`presence:${room}`, user)
        .sCard(`presence:${room}`)
        .exec();
      return count;
    };
    const removePresence = (room) => redis.presenceLeave(room, user);
    const isRoom = (room) => typeof room === 'string' && room.length > 0 && room.length <= 200 && !room.startsWith('user:');

    socket.on('join', async ({ room } = {}, ack = () => {}) => {
      try {
        if (!isRoom(room)) return ack({ error: 'invalid_room' });
        if (socket.rooms.has(room)) return ack({ room, count: await redis.sCard(`presence:${room}`) });
        socket.join(room);
        ack({ room, count: await addPresence(room) });
      } catch {
        ack({ error: 'internal' });
      }
    });

    socket.on('leave', async ({ room } = {}, ack = () => {}) => {
      try {
        if (socket.rooms.has(room) && isRoom(room)) {
          socket.leave(room);
          await removePresence(room);
        }
        ack({});
      } catch {
        ack({ error: 'internal' });
      }
    });

    socket.on('pub', async ({ room, ev, data, others } = {}, ack = () => {}) => {
      try {
        if (!isRoom(room) || !socket.rooms.has(room)) return ack({ error: 'not_member' });
        const seq = await redis.incr(`room:seq:${room}`);
        const msg = { room, ev, data, seq, ts: Date.now(), from: { user, conn: socket.id } };
        (others ? socket.to(room) : io.to(room)).emit('msg', msg);
        ack({ seq });
      } catch {
        ack({ error: 'internal' });
      }
    });

    socket.on('presence', async ({ room } = {}, ack = () => {}) => {
      try {
        const users = await redis.sMembers(`presence:${room}`);
        ack({ users, count: users.length });
      } catch {
        ack({ error: 'internal' });
      }
    });

    // `disconnecting`: socket.rooms still lists the rooms.
    socket.on('disconnecting', () => {
      for (const room of socket.rooms) {
        if (room === socket.id || !isRoom(room)) continue;
        removePresence(room).catch(() => {}); // Redis gone: nothing to clean
      }
    });
  });

  server.listen(PORT, '127.0.0.1', 4096, () => {
    console.log(`${NODE_ID} listening on 127.0.0.1:${PORT} (pid ${process.pid})`);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([redis.quit(), pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
