// Observed flows folded into the distinct flows impact analysis judges: one entry per (source,
// destination, protocol, port), with the connections each reporting end saw and the latest
// time. Nothing here depends on a policy state, so a caller may keep the fold between
// questions and add what was written since (the control plane does, per flow-store revision).
// A million rows fold into columns of numbers (endpoints, workloads and times interned), not an
// object per distinct flow: the fold is kept, and objects kept by the hundred thousand cost
// their allocation and every later garbage collection. Parses addresses; must not judge
// anything (impact.ts does).

import type { DirectionName } from './evaluate.js';
import type { IpAddress } from './ip.js';
import { parseAddress } from './ip.js';
import { PORT_PROTOCOL_NUMBERS } from './protocols.js';
import { canonical, type FlowTuple, parse } from './visibility.js';

/**
 * An observed connection; the same flow may come once from each end, and more than once from
 * one end (a row per verdict and deciding rule, as the flow store keeps them).
 */
export interface ObservedFlow extends FlowTuple {
  /** New connections seen; absent = 1 (it was seen). */
  connections?: number;
  /** The reporting end. Copies from one end add up; copies from different (or unnamed) ends
   * count the same connections twice, so the larger count stands. */
  workload?: string;
  direction?: DirectionName;
  /** Unix ms, or a date string `Date.parse` reads; kept as given. */
  lastSeen?: number | string;
}

/** An address of the flows, parsed once, however many flows and spellings name it. */
export interface FlowEndpoint {
  /** Numbers the endpoint within its fold (in the order first seen). */
  id: number;
  address: IpAddress;
  /** Canonical text. */
  text: string;
}

/** A reporting end of a distinct flow and its connections over all its copies. */
export interface FlowEnd {
  workload?: string;
  direction?: DirectionName;
  connections: number;
}

export interface FlowFold<F extends ObservedFlow> {
  /** Adds a copy: its connections to its end's. */
  add(flow: F): void;
  /**
   * Sets the connections of the copy's end to the copy's (a total over all that end's copies
   * of this distinct flow, as a store that keeps the end's rows can tell) and its time, when
   * later, as the end's and the flow's. Times never go back this way: `remove` first.
   */
  set(flow: F & { workload: string; direction: DirectionName; connections: number }): void;
  /**
   * Takes an end out of its distinct flow (a store removed rows of it: `set` brings back the
   * ones left); the flow's time becomes the latest of its ends left. A flow with no end left is
   * gone, until a copy brings it back under its number (with its first copy as before).
   */
  remove(end: FlowTuple & { workload: string; direction: DirectionName }): void;
  /** `remove` of every end of the workload. */
  removeWorkload(workload: string): void;
  /** Distinct flows present. */
  readonly size: number;
  /** Distinct flows are numbered 0..span-1 in the order first seen, the gone ones too. */
  readonly span: number;
  /** Flow `i` has no end left. */
  gone(i: number): boolean;
  /** Distinct flow `i`'s source and destination (endpoint ids), protocol and port (0 for
   * protocols without ports). */
  src(i: number): number;
  dst(i: number): number;
  protocol(i: number): number;
  port(i: number): number;
  /** Its latest time, as given. */
  lastSeen(i: number): number | string | undefined;
  /** Its first reported copy (undefined when the fold keeps none). */
  copy(i: number): F | undefined;
  /** Its reporting ends (a copy naming no end is an end of its own); none when gone. */
  ends(i: number): FlowEnd[];
  /** Endpoints by `id`. */
  readonly endpoints: readonly FlowEndpoint[];
  /**
   * Some address came spelled other than canonically: `set` is exact only when a store's end
   * total covers every spelling of the end's addresses.
   */
  readonly respelled: boolean;
}

const time = (t: number | string) => (typeof t === 'number' ? t : Date.parse(t));

export function later(a: number | string | undefined, b: number | string | undefined) {
  if (a === undefined) return b;
  if (b === undefined || b === a) return a;
  return time(b) > time(a) ? b : a;
}

/** Numbers for values, in the order first seen; the value before is answered without a lookup
 * (stored rows come in telemetry batches, one workload's at a time). */
function createInterner<T, V>(make: (value: T) => V) {
  const values: V[] = [];
  const ids = new Map<T, number>();
  let last: T | undefined;
  let lastId = -1;
  return {
    values,
    id(value: T): number {
      if (value === last && lastId >= 0) return lastId;
      let id = ids.get(value);
      if (id === undefined) {
        id = values.length;
        values.push(make(value));
        ids.set(value, id);
      }
      last = value;
      lastId = id;
      return id;
    },
    /** The value's number, -1 when never seen (nothing is added). */
    known: (value: T): number => ids.get(value) ?? -1,
  };
}

const same = (a: number, b: number) => a === b || (Number.isNaN(a) && Number.isNaN(b));

/** A typed array twice as long, holding `a`. */
function grown<A extends Float64Array | Int32Array>(a: A): A {
  const b = new (a.constructor as new (n: number) => A)(Math.max(16, a.length * 2));
  b.set(a);
  return b;
}

/**
 * `keepCopies: false` leaves the copies out (a fold kept between questions holds no row);
 * `skipUnparsable` leaves out flows whose source or destination is not an IP address (stored
 * telemetry may hold some) instead of refusing them with POLICY_BAD_ARGUMENT.
 */
export function createFlowFold<F extends ObservedFlow>(
  options: { keepCopies?: boolean; skipUnparsable?: boolean } = {},
): FlowFold<F> {
  const keepCopies = options.keepCopies ?? true;
  const endpoints: FlowEndpoint[] = [];
  // Every spelling of one address is the same endpoint (null: not an address, skipped).
  const byCanonical = new Map<string, FlowEndpoint>();
  const resolve = (text: string): FlowEndpoint | null => {
    const address = options.skipUnparsable ? parseAddress(text) : parse(text);
    if (!address) return null;
    // A dotted quad that parses is canonical already (no leading zeros).
    const canon = address.family === 4 ? text : canonical(address);
    if (canon !== text) folded.respelled = true;
    let e = byCanonical.get(canon);
    if (!e) {
      e = { id: endpoints.length, address, text: canon };
      endpoints.push(e);
      byCanonical.set(canon, e);
    }
    return e;
  };
  const [srcOf, dstOf] = [createInterner(resolve), createInterner(resolve)];
  const workloads = createInterner((name: string) => name);
  const directions = createInterner((name: DirectionName) => name);
  // Times as given, and as numbers to compare.
  const times = createInterner((t: number | string) => t);
  const timeValues: number[] = [];

  // Per distinct flow (`size` of them present, `span` numbered).
  let span = 0;
  let size = 0;
  let src = new Int32Array(0);
  let dst = new Int32Array(0);
  let protocols = new Float64Array(0);
  let ports = new Float64Array(0);
  /** Interned time, -1 for none: the latest of its ends'. */
  let lastSeen = new Int32Array(0);
  /** -1: gone. */
  let firstEnd = new Int32Array(0);
  const copies: F[] = [];
  // Per end: its workload and direction (interned, -1: an end naming none), its connections,
  // its latest time (as `lastSeen`), and the flow's next end (-1: none).
  let endCount = 0;
  let endWorkload = new Int32Array(0);
  let endDirection = new Int32Array(0);
  let endConnections = new Float64Array(0);
  let endLastSeen = new Int32Array(0);
  let endNext = new Int32Array(0);
  // Open addressing: distinct flow + 1 by hash of (src, dst, protocol, port), 0 for empty.
  let slots = new Int32Array(1 << 10);

  const hash = (s: number, d: number, protocol: number, port: number) => {
    let h = Math.imul(s, 0x9e3779b1) ^ Math.imul(d + 0x7f4a7c15, 0x85ebca77);
    h = Math.imul(h ^ (h >>> 15), 0xc2b2ae3d) ^ Math.imul(protocol | 0, 0x27d4eb2f) ^ (port | 0);
    h = Math.imul(h ^ (h >>> 13), 0x165667b1);
    return h ^ (h >>> 16);
  };
  /** The slot of the flow, or the empty slot it would take. */
  const slotOf = (s: number, d: number, protocol: number, port: number) => {
    const mask = slots.length - 1;
    let at = hash(s, d, protocol, port) & mask;
    for (;;) {
      const i = slots[at]! - 1;
      if (
        i < 0 ||
        (src[i] === s && dst[i] === d && same(protocols[i]!, protocol) && same(ports[i]!, port))
      ) {
        return at;
      }
      at = (at + 1) & mask;
    }
  };
  const rehash = () => {
    slots = new Int32Array(slots.length * 2);
    for (let i = 0; i < span; i++) {
      slots[slotOf(src[i]!, dst[i]!, protocols[i]!, ports[i]!)] = i + 1;
    }
  };
  /** Ends removed, linked by `endNext`, for `addEnd` to use again (-1: none). */
  let freeEnd = -1;
  const addEnd = (workload: number, direction: number, connections: number, t: number) => {
    let e = freeEnd;
    if (e >= 0) {
      freeEnd = endNext[e]!;
    } else {
      if (endCount === endWorkload.length) {
        [endWorkload, endDirection] = [grown(endWorkload), grown(endDirection)];
        [endConnections, endNext, endLastSeen] = [
          grown(endConnections),
          grown(endNext),
          grown(endLastSeen),
        ];
      }
      e = endCount++;
    }
    endWorkload[e] = workload;
    endDirection[e] = direction;
    endConnections[e] = connections;
    endLastSeen[e] = t;
    endNext[e] = -1;
    return e;
  };
  /** The later of two interned times (`later`, on the numbers kept). */
  const laterOf = (kept: number, t: number) =>
    kept < 0 || (t >= 0 && t !== kept && timeValues[t]! > timeValues[kept]!) ? t : kept;

  /** Folds a copy in: its connections added to its end's, or (`sets`) as its end's. */
  function fold(flow: F, connections: number, sets: boolean): void {
    const s = srcOf.id(flow.src);
    const srcEnd = srcOf.values[s]!;
    if (srcEnd === null) return;
    const d = dstOf.id(flow.dst);
    const dstEnd = dstOf.values[d]!;
    if (dstEnd === null) return;
    const protocol = flow.protocol;
    const port = PORT_PROTOCOL_NUMBERS.includes(protocol) ? (flow.port ?? 0) : 0;
    const named = flow.workload !== undefined && flow.direction !== undefined;
    const workload = named ? workloads.id(flow.workload!) : -1;
    const direction = named ? directions.id(flow.direction!) : -1;
    const t = flow.lastSeen === undefined ? -1 : times.id(flow.lastSeen);
    if (t === timeValues.length) timeValues.push(time(flow.lastSeen!));
    const at = slotOf(srcEnd.id, dstEnd.id, protocol, port);
    const i = slots[at]! - 1;
    if (i < 0) {
      if (span === src.length) {
        [src, dst, lastSeen, firstEnd] = [grown(src), grown(dst), grown(lastSeen), grown(firstEnd)];
        [protocols, ports] = [grown(protocols), grown(ports)];
      }
      src[span] = srcEnd.id;
      dst[span] = dstEnd.id;
      protocols[span] = protocol;
      ports[span] = port;
      lastSeen[span] = t;
      firstEnd[span] = addEnd(workload, direction, connections, t);
      if (keepCopies) copies.push(flow);
      size++;
      slots[at] = ++span;
      if (span * 2 > slots.length) rehash();
      return;
    }
    if (firstEnd[i]! < 0) {
      size++; // back
      lastSeen[i] = t;
      firstEnd[i] = addEnd(workload, direction, connections, t);
      return;
    }
    lastSeen[i] = laterOf(lastSeen[i]!, t);
    let e = firstEnd[i]!;
    for (;;) {
      if (named && endWorkload[e] === workload && endDirection[e] === direction) {
        endConnections[e] = sets ? connections : endConnections[e]! + connections;
        endLastSeen[e] = laterOf(endLastSeen[e]!, t);
        return;
      }
      if (endNext[e]! < 0) break;
      e = endNext[e]!;
    }
    // Not `endNext[e] = addEnd(...)`: adding may grow (replace) the array read before it.
    const next = addEnd(workload, direction, connections, t);
    endNext[e] = next;
  }

  /** Unlinks the ends of flow `i` that `drop` names (free for the next added); its time is then its ends' latest. */
  function unlink(i: number, drop: (e: number) => boolean): void {
    let prev = -1;
    let t = -1;
    let dropped = false;
    for (let e = firstEnd[i]!; e >= 0; ) {
      const next = endNext[e]!;
      if (!drop(e)) {
        prev = e;
        t = laterOf(t, endLastSeen[e]!);
      } else {
        if (prev < 0) firstEnd[i] = next;
        else endNext[prev] = next;
        endNext[e] = freeEnd;
        freeEnd = e;
        dropped = true;
      }
      e = next;
    }
    if (!dropped) return;
    lastSeen[i] = t;
    if (firstEnd[i]! < 0) size--;
  }

  const folded = {
    add: (flow: F) => fold(flow, flow.connections ?? 1, false),
    set: (flow: F & { connections: number }) => fold(flow, flow.connections, true),
    remove(end: FlowTuple & { workload: string; direction: DirectionName }) {
      const s = srcOf.id(end.src);
      const d = dstOf.id(end.dst);
      const [srcEnd, dstEnd] = [srcOf.values[s]!, dstOf.values[d]!];
      const w = workloads.known(end.workload);
      const dir = directions.known(end.direction);
      if (srcEnd === null || dstEnd === null || w < 0 || dir < 0) return;
      const port = PORT_PROTOCOL_NUMBERS.includes(end.protocol) ? (end.port ?? 0) : 0;
      const i = slots[slotOf(srcEnd.id, dstEnd.id, end.protocol, port)]! - 1;
      if (i >= 0) unlink(i, (e) => endWorkload[e] === w && endDirection[e] === dir);
    },
    removeWorkload(workload: string) {
      const w = workloads.known(workload);
      if (w < 0) return;
      for (let i = 0; i < span; i++) unlink(i, (e) => endWorkload[e] === w);
    },
    get size() {
      return size;
    },
    get span() {
      return span;
    },
    gone: (i: number) => firstEnd[i]! < 0,
    src: (i: number) => src[i]!,
    dst: (i: number) => dst[i]!,
    protocol: (i: number) => protocols[i]!,
    port: (i: number) => ports[i]!,
    lastSeen: (i: number) => (lastSeen[i]! < 0 ? undefined : times.values[lastSeen[i]!]),
    copy: (i: number) => copies[i],
    ends(i: number): FlowEnd[] {
      const out: FlowEnd[] = [];
      for (let e = firstEnd[i]!; e >= 0; e = endNext[e]!) {
        const w = endWorkload[e]!;
        const connections = endConnections[e]!;
        out.push(
          w < 0
            ? { connections }
            : {
                workload: workloads.values[w]!,
                direction: directions.values[endDirection[e]!]!,
                connections,
              },
        );
      }
      return out;
    },
    endpoints,
    respelled: false,
  };
  return folded;
}
