// Impact analysis: replay observed flows against the policy before and after a change, so
// an operator sees which connections a change would cut before enforcing it. `impact` sees a
// flow at both of its ends with their modes; `analyzeImpact` is the older per-end view.

import { alikeFor, type Decide } from './calc/decide.js';
import { type Decision, type DirectionName, evaluatePolicy } from './evaluate.js';
import { createFlowFold, type FlowFold, later, type ObservedFlow } from './impact-flows.js';
import { type IpAddress, parseCidr } from './ip.js';
import type { IpList, Labels, ModeName, PolicyState, Workload } from './model.js';
import { compareStrings } from './protocols.js';
import { canonical, ownersOf, ownersOfText } from './visibility.js';

/** One observed connection of a workload (peer = source for ingress, destination for egress). */
export interface Flow {
  workload: string;
  direction: DirectionName;
  peer: string;
  protocol: number;
  port?: number;
}

export interface FlowChange {
  flow: Flow;
  /** `denied`: allowed before, denied after; `allowed`: the reverse; `rule`: same verdict, other deciding rule. */
  change: 'denied' | 'allowed' | 'rule';
  before: Decision;
  after: Decision;
}

/**
 * The flows whose verdict or deciding rule differs between `before` and `after`, in input
 * order. Flows of workloads missing from either state are skipped: there is nothing to compare.
 */
export function analyzeImpact(
  before: PolicyState,
  after: PolicyState,
  flows: readonly Flow[],
): FlowChange[] {
  const known = (state: PolicyState) => new Set(state.workloads.map((w) => w.name));
  const inBefore = known(before);
  const inAfter = known(after);
  const out: FlowChange[] = [];
  for (const flow of flows) {
    if (!inBefore.has(flow.workload) || !inAfter.has(flow.workload)) continue;
    const args = [flow.workload, flow.direction, flow.peer, flow.protocol, flow.port] as const;
    const was = evaluatePolicy(before, ...args);
    const now = evaluatePolicy(after, ...args);
    if (was.action === now.action && was.ruleId === now.ruleId) continue;
    const change =
      was.action === now.action ? 'rule' : now.action === 'deny' ? 'denied' : 'allowed';
    out.push({ flow, change, before: was, after: now });
  }
  return out;
}

/** At one end: a rule allows; denied but the end is in monitor mode (passes); denied in enforce. */
export type EndOutcome = 'allowed' | 'would-deny' | 'blocked';

export interface ImpactEnd {
  workload: string;
  direction: DirectionName;
  mode: ModeName;
  outcome: EndOutcome;
  /** The deciding rule id, or 'no rule' for the default deny. */
  ruleId: string;
}

export type ImpactChange = 'newly-blocked' | 'newly-allowed' | 'still-would-deny';

export interface ImpactFlow<F extends ObservedFlow> {
  /** The first reported copy. */
  flow: F;
  change: ImpactChange;
  /** Per reporting end the sum of its copies; the largest of the ends (both count the same). */
  connections: number;
  lastSeen?: number | string;
  before: ImpactEnd[];
  after: ImpactEnd[];
}

/** One side of a group: a workload's `groupBy` labels (else its name), else IP lists, else the address. */
export interface EndpointGroup {
  /** Display text and identity: `app=shop,role=db`, `workload:w1`, `ipList:a,b`, or the address. */
  key: string;
  labels?: Labels;
  workload?: string;
  ipLists?: string[];
  address?: string;
}

export interface ImpactGroup<F extends ObservedFlow> {
  change: ImpactChange;
  src: EndpointGroup;
  dst: EndpointGroup;
  protocol: number;
  /** 0 for protocols without ports. */
  port: number;
  connections: number;
  lastSeen?: number | string;
  /** Distinct (direction, rule, outcome) at the ends after the change, egress first. */
  decidedBy: Array<{ direction: DirectionName; ruleId: string; outcome: EndOutcome }>;
  flows: ImpactFlow<F>[];
}

export interface ImpactReport<F extends ObservedFlow> {
  /** Distinct flows per change; `flows` = all distinct observed flows. */
  summary: { newlyBlocked: number; newlyAllowed: number; stillWouldDeny: number; flows: number };
  groups: ImpactGroup<F>[];
}

export interface ImpactOptions {
  /** Label keys that name a workload group; default `['app', 'role']`. */
  groupBy?: readonly string[];
  /**
   * How each state decides (default `evaluatePolicy` on it): `decideOn(state)` answers the
   * same, fast enough for a fleet's flows, and can be kept for a state that does not change.
   */
  decide?: { before?: Decide; after?: Decide };
  /**
   * Leave out flows whose source or destination is not an IP address (stored telemetry may
   * hold some) instead of refusing them with POLICY_BAD_ARGUMENT.
   */
  skipUnparsable?: boolean;
}

const NO_RULE = 'no rule';

/** The model's own evaluator as a decider (the default, and the reference test's). */
export const byModel =
  (state: PolicyState): Decide =>
  (workload, direction, peer, protocol, port) =>
    evaluatePolicy(state, workload, direction, canonical(peer), protocol, port);

function outcomeOf(decision: Decision, mode: ModeName): EndOutcome {
  return decision.action === 'allow' ? 'allowed' : mode === 'enforce' ? 'blocked' : 'would-deny';
}

/** The flow's ends in one side's state: each workload at either end, decided with its mode. */
export function endsIn(
  side: 0 | 1,
  decide: Decide,
  src: ReportEnd,
  dst: ReportEnd,
  protocol: number,
  port: number,
): ImpactEnd[] {
  const ends: ImpactEnd[] = [];
  const add = (w: Workload, direction: DirectionName, peer: IpAddress) => {
    const decision = decide(w.name, direction, peer, protocol, port);
    const mode = w.mode[direction];
    const outcome = outcomeOf(decision, mode);
    ends.push({ workload: w.name, direction, mode, outcome, ruleId: decision.ruleId ?? NO_RULE });
  };
  for (const w of src.owners[side]) add(w, 'egress', dst.address);
  for (const w of dst.owners[side]) add(w, 'ingress', src.address);
  return ends;
}

// What `changeOf` reads of one side's ends, as bits: most flows change nothing, and this
// answers that without building the ends.
const SOME_END = 1;
const SOME_NOT_ALLOWED = 2;
const SOME_BLOCKED = 4;
const SOME_WOULD_DENY = 8;

/** `outcomeOf` as bits, of an answer's `allow`. */
function bitsOf(allowed: boolean, mode: ModeName): number {
  if (allowed) return SOME_END;
  return SOME_END | SOME_NOT_ALLOWED | (mode === 'enforce' ? SOME_BLOCKED : SOME_WOULD_DENY);
}

/**
 * The before state's answers kept between questions, per distinct flow of one fold: the state
 * before a change is the provisioned one, the same plan after plan, so a later question asks
 * only the state after, and only for the workloads the change touches. Kept for one fold and
 * one `before` decider, which must answer for one state only (a new state, a new decider).
 */
export interface ImpactMemo {
  fold?: unknown;
  before?: Decide;
  /** Per distinct flow, per direction (egress in bits 0-1, ingress in 2-3): known, allowed. */
  answers: Uint8Array;
}

export const createImpactMemo = (): ImpactMemo => ({ answers: new Uint8Array(0) });

const KNOWN = 1;
const ALLOWED = 2;

/** How both states decide, and the answers kept of the one before. */
interface Deciders {
  before: Decide;
  after: Decide;
  memo: ImpactMemo;
}

/**
 * Outcome bits of one direction's ends of distinct flow `i`: before in the low four bits, after
 * in the next four. The answer of a lone end before is kept (`shift`: its place in the memo).
 */
function endBits(
  q: Deciders,
  i: number,
  shift: number,
  end: ReportEnd,
  direction: DirectionName,
  peer: IpAddress,
  protocol: number,
  port: number,
): number {
  // Indexed, not destructured: this runs for every end of a million flows.
  const was = end.owners[0];
  const now = end.owners[1];
  let out = 0;
  const one = was.length === 1 ? was[0]! : undefined;
  if (one) {
    const kept = (q.memo.answers[i]! >> shift) & 3;
    let allowed = (kept & ALLOWED) !== 0;
    if (kept === 0) {
      allowed = q.before(one.name, direction, peer, protocol, port).action === 'allow';
      q.memo.answers[i]! |= (KNOWN | (allowed ? ALLOWED : 0)) << shift;
    }
    out = bitsOf(allowed, one.mode[direction]);
    if (end.alike) {
      return out | (bitsOf(allowed, now[0]!.mode[direction]) << 4);
    }
  } else {
    for (const w of was) {
      const allowed = q.before(w.name, direction, peer, protocol, port).action === 'allow';
      out |= bitsOf(allowed, w.mode[direction]);
    }
  }
  for (const w of now) {
    const allowed = q.after(w.name, direction, peer, protocol, port).action === 'allow';
    out |= bitsOf(allowed, w.mode[direction]) << 4;
  }
  return out;
}

/** What the change does to distinct flow `i`, without building its ends. */
function judge(
  q: Deciders,
  i: number,
  src: ReportEnd,
  dst: ReportEnd,
  protocol: number,
  port: number,
) {
  const bits =
    endBits(q, i, 0, src, 'egress', dst.address, protocol, port) |
    endBits(q, i, 2, dst, 'ingress', src.address, protocol, port);
  return changeOf(bits & 15, bits >> 4);
}

function changeOf(before: number, after: number): ImpactChange | undefined {
  const passes = (ends: number) => (ends & SOME_BLOCKED) === 0;
  // With no workload end no policy speaks for the flow: it is not "allowed".
  const allowed = (ends: number) => (ends & (SOME_END | SOME_NOT_ALLOWED)) === SOME_END;
  if (passes(before) && !passes(after)) return 'newly-blocked';
  if (!allowed(before) && allowed(after)) return 'newly-allowed';
  if (passes(after) && (after & SOME_WOULD_DENY) !== 0) return 'still-would-deny';
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
export function impact<F extends ObservedFlow>(
  before: PolicyState,
  after: PolicyState,
  flows: Iterable<F>,
  options: ImpactOptions = {},
): ImpactReport<F> {
  const fold = createFlowFold<F>({ skipUnparsable: options.skipUnparsable });
  for (const flow of flows) fold.add(flow);
  return impactOn(before, after, fold, options);
}

/**
 * `impact` on flows folded already (impact-flows.ts), which may be kept between questions: a
 * fold without copies reports each flow as its (src, dst, protocol, port).
 */
export function impactOn<F extends ObservedFlow>(
  before: PolicyState,
  after: PolicyState,
  fold: Omit<FlowFold<F>, 'add' | 'set' | 'remove' | 'removeWorkload' | 'respelled'>,
  options: Pick<ImpactOptions, 'groupBy' | 'decide'> & { memo?: ImpactMemo } = {},
): ImpactReport<F> {
  const groupBy = options.groupBy ?? ['app', 'role'];
  const decideBefore = options.decide?.before ?? byModel(before);
  const decideAfter = options.decide?.after ?? byModel(after);
  const memo = options.memo ?? createImpactMemo();
  if (memo.fold !== fold || memo.before !== decideBefore) {
    Object.assign(memo, { fold, before: decideBefore, answers: new Uint8Array(0) });
  }
  // A flow's answers depend on its (src, dst, protocol, port) alone: a gone flow's stay.
  const count = fold.span;
  if (memo.answers.length < count) {
    // Flows added since are asked; the ones before keep their answers.
    const answers = new Uint8Array(count);
    answers.set(memo.answers);
    memo.answers = answers;
  }
  const deciders: Deciders = { before: decideBefore, after: decideAfter, memo };
  // The endpoints' owners in both states, looked up once per question.
  const alike = alikeFor(decideBefore, decideAfter);
  const ends = fold.endpoints.map((e): ReportEnd => {
    const owners: ReportEnd['owners'] = [ownersOfText(before, e.text), ownersOfText(after, e.text)];
    const [was, now] = owners;
    const one = was.length === 1 && now.length === 1 && was[0]!.name === now[0]!.name;
    return { address: e.address, owners, alike: one && alike?.(was[0]!.name) === true };
  });
  const moved: MovedFlow<F>[] = [];
  const { endpoints } = fold;
  for (let i = 0; i < count; i++) {
    if (fold.gone(i)) continue;
    const src = ends[fold.src(i)]!;
    const dst = ends[fold.dst(i)]!;
    const protocol = fold.protocol(i);
    const port = fold.port(i);
    const change = judge(deciders, i, src, dst, protocol, port);
    if (change === undefined) continue;
    const flow =
      fold.copy(i) ??
      ({
        src: endpoints[fold.src(i)]!.text,
        dst: endpoints[fold.dst(i)]!.text,
        protocol,
        port,
      } as unknown as F);
    moved.push({ flow, src, dst, port, change, ends: fold.ends(i), lastSeen: fold.lastSeen(i) });
  }
  return reportMoved(before, after, moved, fold.size, {
    before: decideBefore,
    after: decideAfter,
    groupBy,
  });
}

/** What the report reads of a flow's endpoint (its group is named once, when first needed). */
interface ReportEnd {
  address: IpAddress;
  owners: [before: Workload[], after: Workload[]];
  /** One workload owns it in both states, and both decide alike for it. */
  alike?: boolean;
  group?: EndpointGroup;
}

/** A distinct flow the change moves, as the report reads it. */
export interface MovedFlow<F extends ObservedFlow> {
  flow: F;
  src: ReportEnd;
  dst: ReportEnd;
  port: number;
  change: ImpactChange;
  ends: ReadonlyArray<{ connections: number }>;
  lastSeen?: number | string;
}

/**
 * The report on the moved flows (in the order first seen) out of `count` distinct ones: their
 * ends in both states, grouped by what their endpoints are, sorted. Also the reference test's
 * (impact.reference.test-util.ts), whose oracle finds the moved flows its own way.
 */
export function reportMoved<F extends ObservedFlow>(
  before: PolicyState,
  after: PolicyState,
  moved: Iterable<MovedFlow<F>>,
  count: number,
  q: { before: Decide; after: Decide; groupBy: readonly string[] },
): ImpactReport<F> {
  const { before: decideBefore, after: decideAfter, groupBy } = q;
  const summary = { newlyBlocked: 0, newlyAllowed: 0, stillWouldDeny: 0, flows: count };
  const groups = new Map<string, ImpactGroup<F>>();
  for (const d of moved) {
    const { flow, src, dst, port, change } = d;
    const was = endsIn(0, decideBefore, src, dst, flow.protocol, port);
    const now = endsIn(1, decideAfter, src, dst, flow.protocol, port);
    const connections = d.ends.reduce((max, e) => Math.max(max, e.connections), 0);
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
