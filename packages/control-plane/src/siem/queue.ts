// Where a stream target's messages wait until they are known to be delivered: in memory
// (bounded by count) or in an on-disk spool (bounded by bytes, survives a restart). Owns
// ordering, the bound and its drop count; knows nothing about sockets, timing or formats.
import {
  appendFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { SiemError } from './errors.js';

/**
 * An ordered queue with a read cursor: `next()` hands out messages without removing them, so
 * a connection that dies can `rewind()` and send again everything not yet `ack`ed. Ids grow
 * by one per message for the life of the queue object.
 */
export interface MessageQueue {
  /** Appends; past the bound the oldest messages go first and are counted in `dropped`. */
  push(frame: Buffer): void;
  /** The next message after the cursor, advancing it; undefined when all were handed out. */
  next(): { id: number; frame: Buffer } | undefined;
  /** Forgets every message with id < upTo: delivered. */
  ack(upTo: number): void;
  /** Moves the cursor back to the oldest message not acked; returns how many will be resent. */
  rewind(): number;
  /** Messages not acked (handed out or not). */
  readonly pending: number;
  /** Messages not handed out yet. */
  readonly unsent: number;
  readonly dropped: number;
  /** Spool only: bytes on disk. */
  readonly bytes: number;
}

export function createMemoryQueue(max: number): MessageQueue {
  let items: Buffer[] = [];
  let head = 0; // id of items[0]
  let cursor = 0;
  let dropped = 0;
  let bytes = 0;
  const forget = (n: number) => {
    for (const b of items.slice(0, n)) bytes -= b.length;
    items = items.slice(n);
    head += n;
    cursor = Math.max(cursor, head);
  };
  return {
    push(frame) {
      if (items.length >= max) {
        dropped += items.length - max + 1;
        forget(items.length - max + 1);
      }
      items.push(frame);
      bytes += frame.length;
    },
    next() {
      const frame = items[cursor - head];
      return frame ? { id: cursor++, frame } : undefined;
    },
    ack(upTo) {
      if (upTo > head) forget(Math.min(upTo - head, items.length));
    },
    rewind() {
      const n = cursor - head;
      cursor = head;
      return n;
    },
    get pending() {
      return items.length;
    },
    get unsent() {
      return head + items.length - cursor;
    },
    get dropped() {
      return dropped;
    },
    get bytes() {
      return bytes;
    },
  };
}

interface Segment {
  name: string;
  /** Id of its first message. */
  first: number;
  count: number;
  bytes: number;
}

const SEGMENT_RE = /^(\d{12})\.seg$/;
const HEAD_FILE = 'head';
const LEN_BYTES = 4;

/**
 * A spool in `dir`: segment files of length-prefixed messages, appended synchronously (a
 * crash loses nothing that push() returned for), plus a `head` file naming the first message
 * not acked. The head is written on every ack, so a restart resends at most what was
 * delivered after the last ack: at least once. Past `maxBytes` whole segments go, oldest first.
 */
export function createSpoolQueue(dir: string, maxBytes: number): MessageQueue {
  const segmentBytes = Math.max(4096, Math.min(1 << 20, Math.floor(maxBytes / 8)));
  const segments: Segment[] = [];
  let head = 0;
  let cursor = 0;
  let dropped = 0;
  let total = 0;
  let nextSegment = 0;
  // The parsed messages of the one segment the cursor reads from.
  let cache: { seg: Segment; frames: Buffer[] } | undefined;

  const path = (s: Segment) => join(dir, s.name);
  const end = () => {
    const last = segments.at(-1);
    return last ? last.first + last.count : head;
  };

  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let id = 0;
    for (const name of readdirSync(dir)
      .filter((n) => SEGMENT_RE.test(n))
      .sort()) {
      const { frames, size } = parse(readFileSync(join(dir, name)));
      // A torn last message (crash mid-append) is cut off.
      truncateSync(join(dir, name), size);
      segments.push({ name, first: id, count: frames.length, bytes: size });
      id += frames.length;
      total += size;
      nextSegment = Number(SEGMENT_RE.exec(name)![1]) + 1;
    }
    const [name, offset] = readHead(dir);
    const at = segments.find((s) => s.name === name);
    head = at ? at.first + Math.min(offset, at.count) : (segments[0]?.first ?? 0);
    cursor = head;
    dropSegmentsBefore(head);
  } catch (cause) {
    throw new SiemError('SIEM_SPOOL_FAILED', `cannot open the SIEM spool ${dir}`, { cause });
  }

  function removeFirst(): void {
    const s = segments.shift()!;
    total -= s.bytes;
    if (cache?.seg === s) cache = undefined;
    rmSync(path(s), { force: true });
  }

  function dropSegmentsBefore(id: number): void {
    // The last segment stays (it takes the appends) even when fully acked.
    while (segments.length > 1 && segments[0]!.first + segments[0]!.count <= id) removeFirst();
  }

  function writeHead(): void {
    const s = segments.find((x) => head < x.first + x.count) ?? segments.at(-1);
    writeFileSync(join(dir, HEAD_FILE), s ? `${s.name} ${head - s.first}\n` : '');
  }

  return {
    push(frame) {
      let tail = segments.at(-1);
      if (!tail || tail.bytes >= segmentBytes) {
        tail = {
          name: `${String(nextSegment++).padStart(12, '0')}.seg`,
          first: end(),
          count: 0,
          bytes: 0,
        };
        segments.push(tail);
      }
      const record = Buffer.allocUnsafe(LEN_BYTES + frame.length);
      record.writeUInt32BE(frame.length, 0);
      frame.copy(record, LEN_BYTES);
      try {
        appendFileSync(path(tail), record, { mode: 0o600 });
      } catch {
        dropped++;
        return;
      }
      tail.count++;
      tail.bytes += record.length;
      total += record.length;
      if (cache?.seg === tail) cache.frames.push(frame);
      while (total > maxBytes && segments.length > 1) {
        const s = segments[0]!;
        dropped += Math.max(0, s.first + s.count - head);
        head = Math.max(head, s.first + s.count);
        cursor = Math.max(cursor, head);
        removeFirst();
        writeHead();
      }
    },
    next() {
      if (cursor >= end()) return undefined;
      const seg = segments.find((s) => cursor < s.first + s.count)!;
      if (cache?.seg !== seg) cache = { seg, frames: parse(readFileSync(path(seg))).frames };
      const frame = cache.frames[cursor - seg.first];
      return frame ? { id: cursor++, frame } : undefined;
    },
    ack(upTo) {
      const to = Math.min(upTo, end());
      if (to <= head) return;
      head = to;
      cursor = Math.max(cursor, head);
      dropSegmentsBefore(head);
      try {
        writeHead();
      } catch {
        // The messages go out again after a restart: at least once still holds.
      }
    },
    rewind() {
      const n = cursor - head;
      cursor = head;
      return n;
    },
    get pending() {
      return end() - head;
    },
    get unsent() {
      return end() - cursor;
    },
    get dropped() {
      return dropped;
    },
    get bytes() {
      return total;
    },
  };
}

function parse(buf: Buffer): { frames: Buffer[]; size: number } {
  const frames: Buffer[] = [];
  let at = 0;
  while (at + LEN_BYTES <= buf.length) {
    const len = buf.readUInt32BE(at);
    if (at + LEN_BYTES + len > buf.length) break;
    frames.push(buf.subarray(at + LEN_BYTES, at + LEN_BYTES + len));
    at += LEN_BYTES + len;
  }
  return { frames, size: at };
}

function readHead(dir: string): [string, number] {
  try {
    const [name = '', offset = '0'] = readFileSync(join(dir, HEAD_FILE), 'utf8').trim().split(' ');
    return [name, Number(offset) || 0];
  } catch {
    return ['', 0];
  }
}
