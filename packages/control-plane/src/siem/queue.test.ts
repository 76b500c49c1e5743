import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMemoryQueue, createSpoolQueue, type MessageQueue } from './queue.js';

const b = (s: string) => Buffer.from(s);
const drain = (q: MessageQueue) => {
  const out: string[] = [];
  for (let m = q.next(); m; m = q.next()) out.push(m.frame.toString());
  return out;
};

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bh-queue-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe.each([
  ['memory', () => createMemoryQueue(1000)],
  ['spool', () => createSpoolQueue(dir, 1 << 20)],
])('%s queue', (_, make) => {
  it('hands out in order, resends what was not acked after rewind, forgets what was', () => {
    const q = make();
    for (const s of ['a', 'b', 'c', 'd']) q.push(b(s));
    expect(drain(q)).toEqual(['a', 'b', 'c', 'd']);
    expect(q).toMatchObject({ pending: 4, unsent: 0 });
    q.ack(2); // a, b delivered
    expect(q.rewind()).toBe(2);
    expect(drain(q)).toEqual(['c', 'd']);
    q.ack(Number.MAX_SAFE_INTEGER);
    expect(q).toMatchObject({ pending: 0, unsent: 0, dropped: 0 });
    q.push(b('e'));
    expect(drain(q)).toEqual(['e']);
  });
});

describe('memory queue', () => {
  it('drops the oldest past its bound and counts them', () => {
    const q = createMemoryQueue(3);
    for (const s of ['a', 'b', 'c', 'd', 'e']) q.push(b(s));
    expect(q.dropped).toBe(2);
    expect(drain(q)).toEqual(['c', 'd', 'e']);
  });
});

describe('spool queue', () => {
  it('survives a restart: what was not acked comes back, what was does not', () => {
    const q = createSpoolQueue(dir, 1 << 20);
    for (const s of ['a', 'b', 'c']) q.push(b(s));
    drain(q);
    q.ack(1);
    const again = createSpoolQueue(dir, 1 << 20);
    expect(again.pending).toBe(2);
    expect(drain(again)).toEqual(['b', 'c']);
  });

  it('cuts off a message torn by a crash mid-append', () => {
    const q = createSpoolQueue(dir, 1 << 20);
    q.push(b('whole'));
    const [seg] = readdirSync(dir).filter((n) => n.endsWith('.seg'));
    appendFileSync(join(dir, seg!), Buffer.from([0, 0, 0, 9, 0x41]));
    const again = createSpoolQueue(dir, 1 << 20);
    expect(drain(again)).toEqual(['whole']);
    again.push(b('next'));
    expect(drain(createSpoolQueue(dir, 1 << 20))).toEqual(['whole', 'next']);
  });

  it('stays within its byte bound, dropping whole segments oldest first and counting them', () => {
    const max = 64 * 1024;
    const q = createSpoolQueue(dir, max);
    const msg = (i: number) => b(`${i}`.padStart(100, '.'));
    for (let i = 0; i < 2000; i++) q.push(msg(i));
    expect(q.bytes).toBeLessThanOrEqual(max);
    expect(q.dropped).toBeGreaterThan(0);
    expect(q.pending + q.dropped).toBe(2000);
    const left = drain(q);
    expect(left).toHaveLength(q.pending);
    expect(left.at(-1)).toBe(msg(1999).toString());
    expect(left[0]).toBe(msg(q.dropped).toString());
    // Fully acked segments are deleted from disk.
    q.ack(Number.MAX_SAFE_INTEGER);
    expect(readdirSync(dir).filter((n) => n.endsWith('.seg'))).toHaveLength(1);
  });
});
