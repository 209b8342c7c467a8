// ioredis' own .d.ts files import redis-errors, which ships no types.
declare module 'redis-errors';
