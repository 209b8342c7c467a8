// The peer: one Socket.IO 4 node with @socket.io/redis-adapter, written the
// way the NestJS + Socket.IO + Redis tutorials write it (without NestJS).
// Run two of them on the same Redis; the adapter relays room broadcasts
// between nodes over Redis Pub/Sub.
//
//   PORT=3001 NODE_ID=sio-1 REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=s node server.js
//
// Events (each with an ack callback):
//   join {room}                 -> {room, count}   presence kept in Redis sets
//   leave {room}                -> {}
//   pub {room, ev, data, others} -> {seq}          seq from INCR, then emit 'msg'
//   presence {room}             -> {users, count}
// GET /rss answers {rss} (process.memoryUsage) for the load driver.

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');
const jwt = require('jsonwebtoken');

const PORT = Number(process.env.PORT || 3001);
const NODE_ID = process.env.NODE_ID || `sio-${PORT}`;
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const SECRET = process.env.JWT_SECRET || 'bench-secret';

async function main() {
  const redis = createClient({ url: REDIS_URL });
  const pub = redis.duplicate();
  const sub = redis.duplicate();
  await Promise.all([redis.connect(), pub.connect(), sub.connect()]);

  const server = http.createServer((req, res) => {
    if (req.url === '/rss') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ rss: process.memoryUsage().rss, node: NODE_ID }));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const io = new Server(server, {
    transports: ['websocket'],
    adapter: createAdapter(pub, sub),
    serveClient: false,
  });

  // Auth by JWT in the handshake (auth.token, or the token query parameter).
  io.use((socket, next) => {
    const token = socket.handshake.auth?.token || socket.handshake.query?.token;
    try {
      const claims = jwt.verify(String(token || ''), SECRET, { algorithms: ['HS256'] });
      socket.data.user = claims.sub;
      next();
    } catch (err) {
      next(new Error('unauthorized'));
    }
  });

  io.on('connection', (socket) => {
    const user = socket.data.user;
    socket.join(`user:${user}`);

    // Presence as the tutorials keep it: a set of users per room, and a
    // per-user connection count per room.
    async function addPresence(room) {
      const n = await redis.hIncrBy(`presence:conns:${room}`, user, 1);
      if (n === 1) await redis.sAdd(`presence:${room}`, user);
    }
    async function removePresence(room) {
      const n = await redis.hIncrBy(`presence:conns:${room}`, user, -1);
      if (n <= 0) {
        await redis.hDel(`presence:conns:${room}`, user);
        await redis.sRem(`presence:${room}`, user);
      }
    }

    socket.on('join', async ({ room } = {}, ack = () => {}) => {
      try {
        if (typeof room !== 'string') return ack({ error: 'invalid_room' });
        if (socket.rooms.has(room)) return ack({ room, count: await redis.sCard(`presence:${room}`) });
        socket.join(room);
        await addPresence(room);
        ack({ room, count: await redis.sCard(`presence:${room}`) });
      } catch (err) {
        ack({ error: 'internal' });
      }
    });

    socket.on('leave', async ({ room } = {}, ack = () => {}) => {
      try {
        if (socket.rooms.has(room)) {
          socket.leave(room);
          await removePresence(room);
        }
        ack({});
      } catch (err) {
        ack({ error: 'internal' });
      }
    });

    socket.on('pub', async ({ room, ev, data, others } = {}, ack = () => {}) => {
      try {
        if (!socket.rooms.has(room)) return ack({ error: 'not_member' });
        const seq = await redis.incr(`room:seq:${room}`);
        const msg = { room, ev, data, seq, ts: Date.now(), from: { user, conn: socket.id } };
        if (others) socket.to(room).emit('msg', msg);
        else io.to(room).emit('msg', msg);
        ack({ seq });
      } catch (err) {
        ack({ error: 'internal' });
      }
    });

    socket.on('presence', async ({ room } = {}, ack = () => {}) => {
      try {
        const users = await redis.sMembers(`presence:${room}`);
        ack({ users, count: users.length });
      } catch (err) {
        ack({ error: 'internal' });
      }
    });

    socket.on('disconnecting', async () => {
      for (const room of socket.rooms) {
        if (room === socket.id || room === `user:${user}`) continue;
        try {
          await removePresence(room);
        } catch (err) {
          // Redis gone: nothing to clean.
        }
      }
    });
  });

  server.listen(PORT, '127.0.0.1', 4096, () => {
    console.log(`${NODE_ID} listening on 127.0.0.1:${PORT} (pid ${process.pid})`);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([redis.quit(), pub.quit(), sub.quit()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
