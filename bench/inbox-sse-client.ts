// The SSE side of `npm run bench:inbox`: a child process holding its share of the inbox streams,
// driven by bench/inbox.ts over IPC. Each stream is a bare TCP socket speaking just enough HTTP/1.1
// (one GET, then the chunked event stream scanned for `event: counts` / `event: notification`), so
// the client spends next to nothing per connection and per event: the server is what is measured.
// Times are CLOCK_MONOTONIC (process.hrtime), the same clock in every process of the machine.
import net from 'node:net';

/** What the bench asks of this process. */
export type ClientCommand =
  | { type: 'open'; host: string; port: number; streams: { user: string; token: string }[]; inFlight: number }
  | { type: 'arm' }
  | { type: 'status' }
  | { type: 'collect' };

/** What this process answers. */
export type ClientReply =
  | { type: 'opened'; connected: number; failed: number; firstError?: string }
  | { type: 'armed' }
  | { type: 'status'; connected: number; arrived: number; dropped: number }
  /** Per connected stream, when this round's `notification` arrived (ms, CLOCK_MONOTONIC), or -1. */
  | { type: 'collected'; arrivals: number[]; dropped: number };

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

interface Stream {
  socket: net.Socket;
  /** The end of the text read so far, so an event name split over two reads is still seen. */
  tail: string;
  connected: boolean;
  /** When this round's `notification` event arrived (NaN: not yet). */
  arrivedAt: number;
}

const streams: Stream[] = [];
let armed = false;
let arrived = 0;
let dropped = 0;

const send = (reply: ClientReply) => process.send!(reply);

/** Opens one stream; resolves once its first `counts` event came (true) or it failed (the reason). */
function openStream(host: string, port: number, user: string, token: string): Promise<true | string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const s: Stream = { socket, tail: '', connected: false, arrivedAt: NaN };
    let statusSeen = false;
    let settled = false;
    const settle = (v: true | string) => {
      if (settled) return;
      settled = true;
      resolve(v);
    };
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('connect', () => {
      socket.write(`GET /v1/users/${encodeURIComponent(user)}/notifications/stream?token=${encodeURIComponent(token)} HTTP/1.1\r\n`
        + `Host: ${host}:${port}\r\nAccept: text/event-stream\r\n\r\n`);
    });
    socket.on('data', (chunk: string) => {
      const text = s.tail + chunk;
      if (!statusSeen) {
        if (text.length < 12) { s.tail = text; return; }
        statusSeen = true;
        if (!text.startsWith('HTTP/1.1 200')) {
          settle(text.split('\r\n')[0]);
          socket.destroy();
          return;
        }
      }
      if (!s.connected && text.includes('event: counts')) {
        s.connected = true;
        settle(true);
      }
      if (armed && Number.isNaN(s.arrivedAt) && text.includes('event: notification')) {
        s.arrivedAt = nowMs();
        arrived++;
      }
      s.tail = text.length > 40 ? text.slice(-40) : text;
    });
    socket.on('error', (err) => settle(err.message));
    socket.on('close', () => {
      if (s.connected) dropped++;
      settle('closed before its first counts event');
    });
    streams.push(s);
  });
}

process.on('message', (cmd: ClientCommand) => {
  switch (cmd.type) {
    case 'open': {
      let next = 0;
      let connected = 0;
      let failed = 0;
      let firstError: string | undefined;
      void Promise.all(Array.from({ length: Math.max(1, cmd.inFlight) }, async () => {
        for (let i = next++; i < cmd.streams.length; i = next++) {
          const r = await openStream(cmd.host, cmd.port, cmd.streams[i].user, cmd.streams[i].token);
          if (r === true) connected++;
          else { failed++; firstError ??= r; }
        }
      })).then(() => send({ type: 'opened', connected, failed, firstError }));
      break;
    }
    case 'arm':
      for (const s of streams) s.arrivedAt = NaN;
      arrived = 0;
      armed = true;
      send({ type: 'armed' });
      break;
    case 'status':
      send({ type: 'status', connected: streams.filter((s) => s.connected && !s.socket.destroyed).length, arrived, dropped });
      break;
    case 'collect':
      armed = false;
      send({ type: 'collected', arrivals: streams.filter((s) => s.connected).map((s) => (Number.isNaN(s.arrivedAt) ? -1 : s.arrivedAt)), dropped });
      break;
  }
});

// The bench going away (error, Ctrl-C, kill) closes the IPC channel: take every socket down with it.
process.on('disconnect', () => {
  for (const s of streams) s.socket.destroy();
  process.exit(0);
});
process.on('SIGTERM', () => {
  for (const s of streams) s.socket.destroy();
  process.exit(0);
});
