// The REST answers as TypeBox schemas, for the OpenAPI document (generated clients) and the
// contract test that checks real answers against them. Objects are closed: a field an answer
// has and its schema lacks fails that test. These schemas document; they never serialize (api.ts
// sends JSON.stringify, so no field is dropped). Policy's own objects keep policy's schemas;
// what is opaque here (snapshots, rule sets in proto JSON) says so.
import { IpListSchema, PolicySchema, ServiceSchema, WorkloadSchema } from '@bulkhead/policy';
import { type TObject, type TProperties, type TSchema, Type } from '@sinclair/typebox';
import { Labels, ModeName, Time } from './route-support.js';

const closed = <P extends TProperties>(properties: P, description?: string): TObject<P> =>
  Type.Object(properties, { additionalProperties: false, ...(description && { description }) });
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Opt = Type.Optional;
const Direction = Type.Union([Type.Literal('ingress'), Type.Literal('egress')]);
const Mode = closed({ ingress: ModeName, egress: ModeName });
const Change = Type.Union([
  Type.Literal('added'),
  Type.Literal('removed'),
  Type.Literal('changed'),
]);
const Verdict = Type.Union([
  Type.Literal('allowed'),
  Type.Literal('denied'),
  Type.Literal('would-deny'),
]);
const EdgePolicy = Type.Union([...Verdict.anyOf, Type.Literal('not-covered')], {
  description:
    'not-covered: let through only by monitor mode and the default deny (no rule allows it)',
});
const Strings = Type.Array(Type.String());
const Version = Type.Integer({ minimum: 1, description: 'for If-Match; +1 per write' });
const Opaque = (description: string) => Type.Unknown({ description });

// --- errors: every route, every 4xx/5xx, fastify's own included (api.ts)
export const ErrorResponse = closed(
  {
    error: closed({
      code: Type.String({ description: 'stable code, e.g. VALIDATION_FAILED, NOT_FOUND' }),
      message: Type.String(),
      details: Type.Array(closed({ path: Type.String(), message: Type.String() })),
      impact: Opt(Opaque('IMPACT_CONFIRMATION_REQUIRED: the impact report to confirm')),
    }),
  },
  'the one error shape',
);
export const NoContent = Type.Null({ description: 'no content' });

// --- policy administration
const Pending = closed({ addresses: Strings, agentId: Type.String(), requestedAt: Time });
const Release = closed({ at: Time, actor: Type.String(), note: Type.String() });
export const WorkloadRecord = Type.Composite(
  [
    WorkloadSchema,
    closed({
      addressRanges: Strings,
      pending: Nullable(Pending),
      released: Nullable(Release),
      createdAt: Time,
      updatedAt: Time,
      version: Version,
    }),
  ],
  { additionalProperties: false },
);
const versioned = (schema: TObject) =>
  Type.Composite([schema, closed({ version: Version })], { additionalProperties: false });
export const RESOURCE_RESPONSES = {
  'ip-lists': versioned(IpListSchema),
  services: versioned(ServiceSchema),
  policies: versioned(PolicySchema),
};
const ObjectChange = closed({
  kind: Type.String(),
  name: Type.String(),
  change: Change,
  before: Opt(Opaque('the object before')),
  after: Opt(Opaque('the object after')),
  fields: Opt(Strings),
  rules: Opt(closed({ added: Strings, removed: Strings, changed: Strings })),
});
export const Draft = closed({ basedOn: Type.Integer(), changes: Type.Array(ObjectChange) });
export const DiscardedDraft = closed({ discarded: Type.Array(ObjectChange) });

// --- revisions
const ModeChange = closed({ before: ModeName, after: ModeName });
const WorkloadEffect = closed({
  workload: Type.String(),
  change: Change,
  rulesAdded: Strings,
  rulesRemoved: Strings,
  rulesChanged: Strings,
  entriesAdded: Type.Integer(),
  entriesRemoved: Type.Integer(),
  modeChanged: Opt(closed({ ingress: Opt(ModeChange), egress: Opt(ModeChange) })),
});
const NoPolicyEnds = (description: string) =>
  Opt(Type.Array(closed({ workload: Type.String(), direction: Direction }), { description }));
export const Impact = closed({
  summary: closed({
    newlyBlocked: Type.Integer(),
    newlyAllowed: Type.Integer(),
    stillWouldDeny: Type.Integer(),
    flows: Type.Integer(),
  }),
  groups: Type.Array(
    closed({
      change: Type.Union([
        Type.Literal('newly-blocked'),
        Type.Literal('newly-allowed'),
        Type.Literal('still-would-deny'),
      ]),
      src: Type.String(),
      dst: Type.String(),
      protocol: Type.String(),
      port: Type.Integer(),
      connections: Type.Integer(),
      lastSeen: Opt(Time),
      rules: Type.Array(
        closed({
          workload: Type.String(),
          direction: Direction,
          ruleId: Type.String({ description: "the deciding rule, or 'no rule'" }),
        }),
      ),
      noPolicy: NoPolicyEnds(
        "ends among rules with no policy in that direction after the change: web's egress has no policy",
      ),
      flows: Type.Integer(),
    }),
  ),
});
export const ProvisionResult = closed({
  revision: Type.Integer(),
  changed: Strings,
  unchanged: Type.Integer(),
  impact: Impact,
  warnings: Opt(
    Type.Array(
      closed({ workload: Type.String(), entries: Type.Integer(), message: Type.String() }),
    ),
  ),
});
/** `PATCH /v1/workloads/:name`: the workload; with `provision`, the revision it made. */
export const PatchedWorkload = Type.Composite(
  [WorkloadRecord, closed({ provisioned: Opt(ProvisionResult) })],
  { additionalProperties: false },
);
const RevisionFields = {
  revision: Type.Integer(),
  author: Type.String(),
  note: Type.String(),
  createdAt: Time,
};
export const Revisions = Type.Array(closed(RevisionFields));
export const Revision = closed({
  ...RevisionFields,
  snapshot: Opaque('the provisioned objects: policies, services, ipLists'),
  changes: Opaque('what it changed against the revision before it'),
});
export const RevisionDiff = closed({
  from: Type.Integer(),
  to: Type.Union([Type.Integer(), Type.Literal('draft')]),
  objects: Type.Array(ObjectChange),
  workloads: Type.Array(WorkloadEffect),
});
export const RuleSet = closed({
  ruleSet: Opaque('GroupRuleSet, proto JSON (proto/bulkhead/v1)'),
  groups: Type.Array(Opaque('AddressGroup, proto JSON: {id, ranges: [{from, to}]}')),
});

// --- fleet
export const Agent = closed({
  id: Type.String(),
  workload: Type.String(),
  hostname: Type.String(),
  connected: Type.Boolean(),
  offline: Type.Boolean({
    description: "no stream for longer than the control plane's --offline-after",
  }),
  appliedRevision: Type.Integer(),
  appliedHash: Type.String(),
  desiredHash: Nullable(Type.String()),
  desiredRevision: Nullable(Type.Integer()),
  inSync: Type.Boolean(),
  lastSeen: Nullable(Time),
  lastError: Type.String(),
  lastApplyMicros: Type.Integer(),
  version: Type.String(),
  revoked: Type.Boolean(),
});
export const Counters = Type.Array(
  closed({
    workload: Type.String(),
    ruleId: Type.String(),
    direction: Type.String(),
    verdict: Type.String(),
    packets: Type.Integer(),
    bytes: Type.Integer(),
  }),
);
export const CreatedEnrollmentToken = closed({
  id: Type.String(),
  token: Type.String({ description: 'bhe_...; shown once' }),
  expiresAt: Time,
});
export const EnrollmentTokens = Type.Array(
  closed({
    id: Type.String(),
    labels: Labels,
    mode: Mode,
    expiresAt: Time,
    maxUses: Nullable(Type.Integer()),
    uses: Type.Integer(),
    createdAt: Time,
    workload: Nullable(Type.String()),
    scope: Nullable(
      closed({
        names: Opt(Strings),
        labels: Opt(Type.Record(Type.String(), Strings)),
        cidrs: Opt(Strings),
      }),
    ),
  }),
);

// --- visibility
const Endpoint = closed({
  address: Type.String(),
  workload: Opt(Type.String()),
  labels: Opt(Labels),
  ipLists: Opt(Strings),
});
const Flow = closed({
  src: Endpoint,
  dst: Endpoint,
  protocol: Type.String(),
  port: Type.Integer(),
  direction: Direction,
  reportedBy: Type.String(),
  verdict: Verdict,
  ruleId: Type.String(),
  firstSeen: Time,
  lastSeen: Time,
  connections: Type.Integer(),
  bytes: Type.Integer(),
  noPolicy: NoPolicyEnds(
    "ends in monitor mode with no policy in that direction: web's egress has no policy",
  ),
});
export const Flows = closed({ flows: Type.Array(Flow) });
export const FlowMap = closed({
  groupBy: Strings,
  nodes: Type.Array(
    closed({
      id: Type.String(),
      kind: Type.Union([Type.Literal('group'), Type.Literal('ip-list'), Type.Literal('external')]),
      name: Type.String(),
      labels: Opt(Labels),
      workloads: Opt(Strings),
    }),
  ),
  edges: Type.Array(
    closed({
      from: Type.String(),
      to: Type.String(),
      protocol: Type.String(),
      port: Type.Integer(),
      connections: Type.Integer(),
      bytes: Type.Integer(),
      firstSeen: Time,
      lastSeen: Time,
      observed: closed({
        allowed: Type.Integer(),
        denied: Type.Integer(),
        'would-deny': Type.Integer(),
      }),
      policy: EdgePolicy,
      noPolicy: Opt(
        Type.Array(Direction, {
          description:
            'not-covered: the directions with no policy (egress: the source, ingress: the destination)',
        }),
      ),
    }),
  ),
});
export const Recommendation = closed({
  policies: Type.Array(PolicySchema),
  coverage: closed({
    observed: Type.Integer(),
    allowedByCurrent: Type.Integer(),
    allowedWithProposal: Type.Integer(),
    ratio: Type.Number(),
  }),
  uncovered: Type.Array(Flow),
});
export const Events = Type.Array(
  closed({
    id: Type.Integer(),
    agentId: Type.String(),
    workload: Type.String(),
    code: Type.String(),
    message: Type.String(),
    at: Time,
    attributes: Type.Record(Type.String(), Type.String()),
  }),
);
const ExplainEndpoint = closed({ address: Type.String(), workload: Opt(Type.String()) });
export const Explain = closed({
  from: Type.String(),
  to: Type.String(),
  protocol: Type.String(),
  port: Type.Integer(),
  truncated: Type.Boolean(),
  sides: Type.Array(
    closed({
      state: Type.Union([
        Type.Literal('provisioned'),
        Type.Literal('draft'),
        Type.Literal('revision'),
      ]),
      revision: Opt(Type.Integer()),
      pairs: Type.Array(
        closed({
          src: ExplainEndpoint,
          dst: ExplainEndpoint,
          verdict: EdgePolicy,
          summary: Type.String(),
          ends: Type.Array(
            closed({
              workload: Type.String(),
              direction: Direction,
              mode: ModeName,
              action: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
              ruleId: Opt(Type.String()),
              policies: Strings,
              verdict: EdgePolicy,
              reason: Type.String(),
            }),
          ),
        }),
      ),
    }),
  ),
});
export const Hygiene = closed({
  days: Type.Integer(),
  at: Time,
  revision: Type.Integer(),
  findings: Type.Array(
    closed({
      kind: Type.String({ description: 'unused-rule, broad-rule, shadowed-rule, ...' }),
      subject: Type.String(),
      detail: Type.String(),
      fix: Type.String(),
    }),
  ),
});

// --- access
export const CreatedApiToken = closed({
  id: Type.String(),
  token: Type.String({ description: 'bh_...; shown once' }),
});
export const ApiTokens = Type.Array(
  closed({
    id: Type.String(),
    name: Type.String(),
    role: Type.Union([Type.Literal('admin'), Type.Literal('viewer')]),
    createdAt: Time,
    lastUsed: Nullable(Time),
  }),
);
export const Audit = Type.Array(
  closed({
    id: Type.Integer(),
    at: Time,
    actor: Type.String(),
    action: Type.String(),
    target: Type.String(),
    before: Opaque('the object before, if any'),
    after: Opaque('the object after, if any'),
  }),
);

// --- staged rollouts (every rollout route answers the rollout's state)
const RolloutBrokenFlow = closed({
  workload: Type.String({
    description: 'the reporting workload (rolled back to the base revision)',
  }),
  direction: Direction,
  src: Type.String(),
  dst: Type.String(),
  protocol: Type.Integer(),
  port: Type.Integer(),
  ruleId: Type.String({ description: 'the rule that denied it (`default`: no rule allows it)' }),
});
export const Rollout = closed({
  id: Type.Integer(),
  revision: Type.Integer({ description: 'the revision being rolled out' }),
  baseRevision: Type.Integer({
    description: 'what every workload had before (abort returns to it)',
  }),
  note: Type.String(),
  actor: Type.String(),
  status: Type.Union(
    ['running', 'paused', 'held', 'completed', 'aborted'].map((s) => Type.Literal(s)),
  ),
  waves: Type.Array(Strings, { description: 'workload names per wave; wave 0 is the canary' }),
  wave: Type.Integer({ description: 'the wave being watched' }),
  waveStartedAt: Time,
  watchSeconds: Type.Integer(),
  rolledBack: Strings,
  hold: Opt(closed({ at: Time, message: Type.String(), flows: Type.Array(RolloutBrokenFlow) })),
  endRevision: Opt(Type.Integer()),
  createdAt: Time,
  updatedAt: Time,
});
