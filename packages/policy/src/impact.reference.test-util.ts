// impact() as it was before issue 8's rewrite (71bd725), kept as the oracle the rewrite is
// compared with (impact.reference.test.ts): the straightforward form, one string key per flow
// and every end built. Test code only; never imported by the package.

import type { Decide } from './calc/decide.js';
import { type DirectionName, evaluatePolicy } from './evaluate.js';
import type {
  EndOutcome,
  EndpointGroup,
  ImpactChange,
  ImpactEnd,
  ImpactFlow,
  ImpactGroup,
  ImpactOptions,
  ImpactReport,
  ObservedFlow,
} from './impact.js';
import { type IpAddress, parseCidr } from './ip.js';
import type { IpList, PolicyState, Workload } from './model.js';
import { compareStrings, PORT_PROTOCOL_NUMBERS } from './protocols.js';
import { canonical, ownersOf, parse } from './visibility.js';

const NO_RULE = 'no rule';

const byModel =
  (state: PolicyState): Decide =>
  (workload, direction, peer, protocol, port) =>
    evaluatePolicy(state, workload, direction, canonical(peer), protocol, port);

/** An address of the flows, parsed once per impact question, with its owners in each state. */
interface Endpoint {
  address: IpAddress;
  text: string;
  owners: [before: Workload[], after: Workload[]];
  group?: EndpointGroup;
}

function endsIn(
  side: 0 | 1,
  decide: Decide,
  src: Endpoint,
  dst: Endpoint,
  protocol: number,
  port: number,
): ImpactEnd[] {
  const ends: ImpactEnd[] = [];
  const add = (w: Workload, direction: DirectionName, peer: IpAddress) => {
    const decision = decide(w.name, direction, peer, protocol, port);
    const mode = w.mode[direction];
    const outcome: EndOutcome =
      decision.action === 'allow' ? 'allowed' : mode === 'enforce' ? 'blocked' : 'would-deny';
    ends.push({ workload: w.name, direction, mode, outcome, ruleId: decision.ruleId ?? NO_RULE });
  };
  for (const w of src.owners[side]) add(w, 'egress', dst.address);
  for (const w of dst.owners[side]) add(w, 'ingress', src.address);
  return ends;
}

function changeOf(before: ImpactEnd[], after: ImpactEnd[]): ImpactChange | undefined {
  const passes = (ends: ImpactEnd[]) => ends.every((e) => e.outcome !== 'blocked');
  // With no workload end no policy speaks for the flow: it is not "allowed".
  const allowed = (ends: ImpactEnd[]) =>
    ends.length > 0 && ends.every((e) => e.outcome === 'allowed');
  if (passes(before) && !passes(after)) return 'newly-blocked';
  if (!allowed(before) && allowed(after)) return 'newly-allowed';
  if (passes(after) && after.some((e) => e.outcome === 'would-deny')) return 'still-would-deny';
  return undefined;
}

function inList(list: IpList, address: IpAddress): boolean {
  const within = (text: string) => {
    const parsed = parseCidr(text);
    return (
      parsed.ok &&
      parsed.range.family === address.family &&
      parsed.range.from <= address.value &&
      address.value <= parsed.range.to
    );
  };
  return list.cidrs.some(within) && !(list.except ?? []).some(within);
}

function groupOf(
  before: PolicyState,
  after: PolicyState,
  address: IpAddress,
  groupBy: readonly string[],
): EndpointGroup {
  // Named as the change leaves it; a workload or list the change removes, as it was.
  for (const state of [after, before]) {
    const owner = ownersOf(state, address)[0];
    if (!owner) continue;
    const keys = [...new Set(groupBy)].filter((k) => owner.labels[k] !== undefined);
    if (keys.length === 0) return { key: `workload:${owner.name}`, workload: owner.name };
    const labels = Object.fromEntries(keys.sort(compareStrings).map((k) => [k, owner.labels[k]!]));
    return { key: keys.map((k) => `${k}=${labels[k]}`).join(','), labels };
  }
  for (const state of [after, before]) {
    const names = state.ipLists
      .filter((l) => inList(l, address))
      .map((l) => l.name)
      .sort(compareStrings);
    if (names.length > 0) return { key: `ipList:${names.join(',')}`, ipLists: names };
  }
  return { key: canonical(address), address: canonical(address) };
}

const time = (t: number | string) => (typeof t === 'number' ? t : Date.parse(t));

function later(a: number | string | undefined, b: number | string | undefined) {
  if (a === undefined) return b;
  if (b === undefined || b === a) return a;
  return time(b) > time(a) ? b : a;
}

const DIRECTION_ORDER: Record<DirectionName, number> = { egress: 0, ingress: 1 };

/**
 * Replays observed flows against the state before and after a change, at every workload end
 * (the source's egress, the destination's ingress) with each state's own modes. A flow is
 * `newly-blocked` when it passed at every end before and is blocked at some end after;
 * `newly-allowed` when it was not allowed at every end before and is after; otherwise
 * `still-would-deny` when it passes after only because an end is in monitor mode. Flows
 * that are the same (src, dst, protocol, port) count once. Groups: newly-blocked first, then
 * by connections, most first.
 */
export function referenceImpact<F extends ObservedFlow>(
  before: PolicyState,
  after: PolicyState,
  flows: readonly F[],
  options: ImpactOptions = {},
): ImpactReport<F> {
  const groupBy = options.groupBy ?? ['app', 'role'];
  const decideBefore = options.decide?.before ?? byModel(before);
  const decideAfter = options.decide?.after ?? byModel(after);
  // Flows share their addresses: each is parsed and looked up once.
  const endpoints = new Map<string, Endpoint>();
  const endpoint = (text: string): Endpoint => {
    let e = endpoints.get(text);
    if (!e) {
      const address = parse(text);
      e = {
        address,
        text: canonical(address),
        owners: [ownersOf(before, address), ownersOf(after, address)],
      };
      endpoints.set(text, e);
    }
    return e;
  };
  const distinct = new Map<
    string,
    {
      flow: F;
      src: Endpoint;
      dst: Endpoint;
      port: number;
      /**
       * Connections per reporting end over all its copies (most flows have one or two ends; a
       * copy naming no end is an end of its own).
       */
      ends: Array<{ end?: string; connections: number }>;
      lastSeen?: number | string;
    }
  >();
  for (const flow of flows) {
    const src = endpoint(flow.src);
    const dst = endpoint(flow.dst);
    const port = PORT_PROTOCOL_NUMBERS.includes(flow.protocol) ? (flow.port ?? 0) : 0;
    const key = `${src.text} ${dst.text} ${flow.protocol} ${port}`;
    let seen = distinct.get(key);
    if (!seen) {
      seen = { flow, src, dst, port, ends: [], lastSeen: flow.lastSeen };
      distinct.set(key, seen);
    } else {
      seen.lastSeen = later(seen.lastSeen, flow.lastSeen);
    }
    const connections = flow.connections ?? 1;
    const end =
      flow.workload !== undefined && flow.direction !== undefined
        ? `${flow.direction} ${flow.workload}`
        : undefined;
    const same = end === undefined ? undefined : seen.ends.find((e) => e.end === end);
    if (same) same.connections += connections;
    else seen.ends.push({ end, connections });
  }

  const summary = { newlyBlocked: 0, newlyAllowed: 0, stillWouldDeny: 0, flows: distinct.size };
  const groups = new Map<string, ImpactGroup<F>>();
  for (const d of distinct.values()) {
    const { flow, src, dst, port } = d;
    const connections = d.ends.reduce((max, e) => Math.max(max, e.connections), 0);
    const was = endsIn(0, decideBefore, src, dst, flow.protocol, port);
    const now = endsIn(1, decideAfter, src, dst, flow.protocol, port);
    const change = changeOf(was, now);
    if (!change) continue;
    if (change === 'newly-blocked') summary.newlyBlocked++;
    else if (change === 'newly-allowed') summary.newlyAllowed++;
    else summary.stillWouldDeny++;
    src.group ??= groupOf(before, after, src.address, groupBy);
    dst.group ??= groupOf(before, after, dst.address, groupBy);
    const [srcGroup, dstGroup] = [src.group, dst.group];
    const key = JSON.stringify([change, srcGroup.key, dstGroup.key, flow.protocol, port]);
    let group = groups.get(key);
    if (!group) {
      group = {
        change,
        src: srcGroup,
        dst: dstGroup,
        protocol: flow.protocol,
        port,
        connections: 0,
        decidedBy: [],
        flows: [],
      };
      groups.set(key, group);
    }
    group.connections += connections;
    const lastSeen = later(group.lastSeen, d.lastSeen);
    if (lastSeen !== undefined) group.lastSeen = lastSeen;
    for (const e of now) {
      const known = group.decidedBy.some(
        (x) => x.direction === e.direction && x.ruleId === e.ruleId && x.outcome === e.outcome,
      );
      if (!known)
        group.decidedBy.push({ direction: e.direction, ruleId: e.ruleId, outcome: e.outcome });
    }
    const item: ImpactFlow<F> = {
      flow,
      change,
      connections,
      before: was,
      after: now,
    };
    if (d.lastSeen !== undefined) item.lastSeen = d.lastSeen;
    group.flows.push(item);
  }

  for (const group of groups.values()) {
    group.decidedBy.sort(
      (a, b) =>
        DIRECTION_ORDER[a.direction] - DIRECTION_ORDER[b.direction] ||
        compareStrings(a.ruleId, b.ruleId) ||
        compareStrings(a.outcome, b.outcome),
    );
    group.flows.sort(
      (a, b) =>
        b.connections - a.connections ||
        compareStrings(a.flow.src, b.flow.src) ||
        compareStrings(a.flow.dst, b.flow.dst),
    );
  }
  const blockedFirst = (g: ImpactGroup<F>) => (g.change === 'newly-blocked' ? 0 : 1);
  const sorted = [...groups.values()].sort(
    (a, b) =>
      blockedFirst(a) - blockedFirst(b) ||
      b.connections - a.connections ||
      compareStrings(a.change, b.change) ||
      compareStrings(a.src.key, b.src.key) ||
      compareStrings(a.dst.key, b.dst.key) ||
      a.protocol - b.protocol ||
      a.port - b.port,
  );
  return { summary, groups: sorted };
}
