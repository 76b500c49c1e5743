// Explain: why a connection between two endpoints is allowed or not, end by end, under the
// provisioned policy and the draft (or one revision). Endpoints are resolved against today's
// workloads; the verdicts come from policy's classifyFlow (evaluatePolicy), so they agree with
// what the compiled rule sets do in the kernel. Reads states only; stores nothing.
import type {
  ExplainEnd,
  ExplainPair,
  ExplainRequest,
  ExplainSide,
  ExplainView,
} from '@bulkhead/api';
import {
  classifyFlow,
  type FlowEnd,
  formatAddress,
  PORT_PROTOCOL_NUMBERS,
  type PolicyState,
  parseAddress,
  policiesFor,
  type Workload,
} from '@bulkhead/policy';
import { invalid, notFound } from '../errors.js';
import type { PolicyStates } from '../policy-state.js';
import { protocolName, protocolNumber } from './views.js';

/** Label selectors can match many workloads; pairs beyond this are left out (`truncated`). */
export const MAX_EXPLAIN_PAIRS = 20;

export interface ExplainService {
  explain(req: ExplainRequest): ExplainView;
}

interface Endpoint {
  address: string;
  workload?: Workload;
}

/** `from`/`to` as endpoints: an address as is, a workload's addresses, or every labelled workload's. */
function resolve(text: string, path: string, workloads: Workload[]): Endpoint[][] {
  const address = parseAddress(text);
  if (address) {
    const canonical = formatAddress(address.family, address.value);
    const same = (a: string) => {
      const b = parseAddress(a);
      return b?.family === address.family && b.value === address.value;
    };
    const owner = workloads.find((w) => w.addresses.some(same));
    return [[owner ? { address: canonical, workload: owner } : { address: canonical }]];
  }
  let matched: Workload[];
  if (text.includes('=')) {
    const wanted = text.split(',').map((pair) => {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw invalid('invalid explain request', [{ path, message: 'use k=v[,k=v]' }]);
      return [pair.slice(0, eq).trim(), pair.slice(eq + 1).trim()] as const;
    });
    matched = workloads.filter((w) => wanted.every(([k, v]) => w.labels[k] === v));
    if (matched.length === 0) throw notFound(`a workload labelled ${text}`);
  } else {
    const w = workloads.find((x) => x.name === text);
    if (!w) throw notFound(`workload ${text}`);
    matched = [w];
  }
  return matched.map((w) => w.addresses.map((a) => ({ address: a, workload: w })));
}

/** The first source address with a destination address of the same family. */
function pairOf(src: Endpoint[], dst: Endpoint[]): [Endpoint, Endpoint] | undefined {
  for (const s of src) {
    const family = parseAddress(s.address)?.family;
    const d = dst.find((x) => parseAddress(x.address)?.family === family);
    if (d) return [s, d];
  }
  return undefined;
}

/** One name for one thing: an end in a direction no policy selects. */
const NO_POLICY = 'has no policy';

/** Why the end decides as it does; what the mode then does with a deny is the `mode` field's. */
function reasonOf(end: FlowEnd, policies: string[]): string {
  const { decision } = end;
  if (decision.action === 'allow') return `allowed by ${decision.ruleId}`;
  if (decision.ruleId !== undefined) return `denied by ${decision.ruleId}`;
  return policies.length === 0
    ? `${end.direction} ${NO_POLICY}: default deny`
    : `default deny: no rule of ${policies.join(', ')} allows it`;
}

function summaryOf(pair: Omit<ExplainPair, 'summary'>): string {
  const at = (e: ExplainEnd) => `${e.workload}'s ${e.direction}`;
  if (pair.ends.length === 0) return 'no workload at either end: no policy applies';
  const denied = pair.ends.filter((e) => e.action === 'deny');
  if (denied.length === 0) return `allowed at ${pair.ends.map(at).join(' and ')}`;
  const blocking = denied.filter((e) => e.mode === 'enforce');
  if (blocking.length > 0) return `blocked at ${blocking.map(at).join(' and ')}`;
  // Allowed at one end, let through at the other only because nothing speaks for it there.
  const allowed = pair.ends.filter((e) => e.action === 'allow');
  if (
    allowed.length > 0 &&
    denied.every((e) => e.ruleId === undefined && e.policies.length === 0)
  ) {
    return `allowed at ${allowed.map(at).join(' and ')}, but ${denied.map(at).join(' and ')} ${NO_POLICY} (monitor mode lets it through)`;
  }
  return `passes only because ${denied.map(at).join(' and ')} ${denied.length > 1 ? 'are' : 'is'} in monitor mode`;
}

function explainPair(
  state: PolicyState,
  src: Endpoint,
  dst: Endpoint,
  protocol: number,
  port: number,
): ExplainPair {
  const c = classifyFlow(state, { src: src.address, dst: dst.address, protocol, port });
  const ends = c.ends.map((e): ExplainEnd => {
    const policies = policiesFor(state, e.workload, e.direction);
    const end: ExplainEnd = {
      workload: e.workload,
      direction: e.direction,
      mode: e.mode,
      action: e.decision.action,
      policies,
      verdict: e.verdict,
      reason: reasonOf(e, policies),
    };
    if (e.decision.ruleId !== undefined) end.ruleId = e.decision.ruleId;
    return end;
  });
  const endpoint = (e: Endpoint) =>
    e.workload ? { address: e.address, workload: e.workload.name } : { address: e.address };
  const pair = { src: endpoint(src), dst: endpoint(dst), verdict: c.verdict, ends };
  return { ...pair, summary: summaryOf(pair) };
}

export function createExplainService(states: PolicyStates): ExplainService {
  return {
    explain(req) {
      const protocol = protocolNumber(req.protocol);
      if (protocol === undefined || protocol === 0) {
        throw invalid('invalid explain request', [
          { path: 'protocol', message: 'must be tcp, udp, sctp, icmp, icmpv6 or 1..255' },
        ]);
      }
      const port = PORT_PROTOCOL_NUMBERS.includes(protocol) ? (req.port ?? 0) : 0;
      if (req.revision !== undefined && req.draft === true) {
        throw invalid('invalid explain request', [
          { path: 'revision', message: 'give revision or draft, not both' },
        ]);
      }
      const workloads = states.workloads();
      const pairs: [Endpoint, Endpoint][] = [];
      let truncated = false;
      for (const src of resolve(req.from, 'from', workloads)) {
        for (const dst of resolve(req.to, 'to', workloads)) {
          const pair = pairOf(src, dst);
          if (!pair) continue;
          if (pairs.length === MAX_EXPLAIN_PAIRS) truncated = true;
          else pairs.push(pair);
        }
      }
      if (pairs.length === 0) {
        throw invalid('invalid explain request', [
          { path: 'to', message: `has no address of the same family as ${req.from}` },
        ]);
      }
      const sides: Array<{ side: Omit<ExplainSide, 'pairs'>; state: PolicyState }> = [];
      if (req.revision !== undefined) {
        sides.push({
          side: { state: 'revision', revision: req.revision },
          state: states.atRevision(req.revision, workloads),
        });
      } else {
        if (req.draft !== true) {
          const p = states.provisioned(workloads);
          sides.push({ side: { state: 'provisioned', revision: p.revision }, state: p.state });
        }
        sides.push({ side: { state: 'draft' }, state: states.draft() });
      }
      return {
        from: req.from,
        to: req.to,
        protocol: protocolName(protocol),
        port,
        sides: sides.map(({ side, state }) => ({
          ...side,
          pairs: pairs.map(([s, d]) => explainPair(state, s, d, protocol, port)),
        })),
        truncated,
      };
    },
  };
}
