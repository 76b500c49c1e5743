// Observed flows folded into the distinct flows impact analysis judges: one entry per (source,
// destination, protocol, port), with the connections each reporting end saw and the latest
// time. Nothing here depends on a policy state, so a caller may keep the fold between
// questions and add what was written since (the control plane does, per flow-store revision).
// Parses addresses; must not judge anything (impact.ts does).

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

/** The copies of one (src, dst, protocol, port). */
export interface DistinctFlow<F extends ObservedFlow> {
  /** The first reported copy (absent when the fold keeps none). */
  flow?: F;
  src: FlowEndpoint;
  dst: FlowEndpoint;
  protocol: number;
  /** 0 for protocols without ports. */
  port: number;
  /**
   * The first reporting end (none named: a copy naming no end, an end of its own) and its
   * connections over all its copies; the others in `more` (most flows have one or two ends,
   * and a million flows are kept: one object each, not an array of ends).
   */
  workload: string | undefined;
  direction: DirectionName | undefined;
  connections: number;
  more: FlowEnd[] | undefined;
  lastSeen?: number | string;
}

export interface FlowEnd {
  workload?: string;
  direction?: DirectionName;
  connections: number;
}

/** A distinct flow's ends, the first one first. */
export function endsOf(d: DistinctFlow<ObservedFlow>): FlowEnd[] {
  const first = d.workload === undefined ? {} : { workload: d.workload, direction: d.direction };
  return [{ ...first, connections: d.connections }, ...(d.more ?? [])];
}

export interface FlowFold<F extends ObservedFlow> {
  /** Adds a copy: its connections to its end's. */
  add(flow: F): void;
  /**
   * Sets the connections of the copy's end to the copy's (a total over all that end's copies
   * of this distinct flow, as a store that keeps the end's rows can tell) and its time, when
   * later, as the flow's. A flow's times never go back this way: after a copy is removed,
   * fold again.
   */
  set(flow: F & { workload: string; direction: DirectionName; connections: number }): void;
  /** Distinct flows in the order first seen. */
  readonly flows: readonly DistinctFlow<F>[];
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

/** One number for the common case (a protocol byte and a port), text otherwise. */
function flowKey(dst: number, protocol: number, port: number): number | string {
  return protocol >>> 0 === protocol && protocol < 256 && port >>> 0 === port && port < 65536
    ? dst * 16_777_216 + protocol * 65_536 + port
    : `${dst} ${protocol} ${port}`;
}

/**
 * `keepCopies: false` leaves `flow` out (a fold kept between questions holds no row);
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
  const bySpelling = new Map<string, FlowEndpoint | null>();
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
  const endpoint = (text: string): FlowEndpoint | null => {
    let e = bySpelling.get(text);
    if (e === undefined) {
      e = resolve(text);
      bySpelling.set(text, e);
    }
    return e;
  };
  // Stored rows come in telemetry batches, one workload's at a time: the row before often has
  // the same source or destination, and a string compare is cheaper than a lookup.
  const lastOf = (): ((text: string) => FlowEndpoint | null) => {
    let text: string | undefined;
    let e: FlowEndpoint | null = null;
    return (t) => {
      if (t !== text) {
        text = t;
        e = endpoint(t);
      }
      return e;
    };
  };
  const [srcOf, dstOf] = [lastOf(), lastOf()];
  const flows: DistinctFlow<F>[] = [];
  /** Per source endpoint id, its distinct flows by destination, protocol and port. */
  const out: Array<Map<number | string, DistinctFlow<F>>> = [];

  /** Folds a copy in: its connections added to its end's, or (`sets`) as its end's. */
  function fold(flow: F, connections: number, sets: boolean): void {
    const src = srcOf(flow.src);
    if (src === null) return;
    const dst = dstOf(flow.dst);
    if (dst === null) return;
    const { protocol, workload } = flow;
    // The two names, not a string per row (a million flows are kept).
    const d0 = flow.direction;
    const direction = d0 === 'ingress' ? 'ingress' : d0 === 'egress' ? 'egress' : d0;
    const named = workload !== undefined && direction !== undefined;
    const port = PORT_PROTOCOL_NUMBERS.includes(protocol) ? (flow.port ?? 0) : 0;
    const key = flowKey(dst.id, protocol, port);
    let bySrc = out[src.id];
    if (!bySrc) {
      bySrc = new Map();
      out[src.id] = bySrc;
    }
    const d = bySrc.get(key);
    if (d === undefined) {
      const made: DistinctFlow<F> = {
        flow: keepCopies ? flow : undefined,
        src,
        dst,
        protocol,
        port,
        workload: named ? workload : undefined,
        direction: named ? direction : undefined,
        connections,
        more: undefined,
        lastSeen: flow.lastSeen,
      };
      bySrc.set(key, made);
      flows.push(made);
      return;
    }
    d.lastSeen = later(d.lastSeen, flow.lastSeen);
    if (named && d.workload === workload && d.direction === direction) {
      d.connections = sets ? connections : d.connections + connections;
      return;
    }
    const same = named
      ? d.more?.find((e) => e.workload === workload && e.direction === direction)
      : undefined;
    if (same) {
      same.connections = sets ? connections : same.connections + connections;
      return;
    }
    d.more ??= [];
    d.more.push(named ? { workload, direction, connections } : { connections });
  }

  const folded: FlowFold<F> & { respelled: boolean } = {
    add: (flow) => fold(flow, flow.connections ?? 1, false),
    set: (flow) => fold(flow, flow.connections, true),
    flows,
    endpoints,
    respelled: false,
  };
  return folded;
}
