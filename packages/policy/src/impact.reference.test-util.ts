// impact() as it was before issue 8's rewrite (71bd725), kept as the oracle the rewrite is
// compared with (impact.reference.test.ts): the straightforward form, one string key per flow
// and every end built to find the flows a change moves. The report on those is impact()'s own
// (reportMoved: unchanged by the rewrite). Test code only; never imported by the package.

import {
  byModel,
  type EndpointGroup,
  endsIn,
  type ImpactChange,
  type ImpactEnd,
  type ImpactOptions,
  type ImpactReport,
  type MovedFlow,
  reportMoved,
} from './impact.js';
import { later, type ObservedFlow } from './impact-flows.js';
import type { IpAddress } from './ip.js';
import type { PolicyState, Workload } from './model.js';
import { PORT_PROTOCOL_NUMBERS } from './protocols.js';
import { canonical, ownersOf, parse } from './visibility.js';

/** An address of the flows, parsed once per impact question, with its owners in each state. */
interface Endpoint {
  address: IpAddress;
  text: string;
  owners: [before: Workload[], after: Workload[]];
  group?: EndpointGroup;
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

  // What it finds moved is reported as impact() reports it (reportMoved).
  const moved: Array<MovedFlow<F>> = [];
  for (const d of distinct.values()) {
    const { flow, src, dst, port } = d;
    const change = changeOf(
      endsIn(0, decideBefore, src, dst, flow.protocol, port),
      endsIn(1, decideAfter, src, dst, flow.protocol, port),
    );
    if (change) moved.push({ ...d, change });
  }
  return reportMoved(before, after, moved, distinct.size, {
    before: decideBefore,
    after: decideAfter,
    groupBy,
  });
}
