// TypeBox schemas for user-facing objects. They double as fastify route schemas, so they
// hold the structure; checks that need code (CIDRs, label syntax, cross references) live
// in validate.ts.

import { Type } from '@sinclair/typebox';

export const NAME_PATTERN = '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$';

const Name = Type.String({
  pattern: NAME_PATTERN,
  description: 'lowercase letters, digits, ".", "_", "-"; 1-63 characters',
});
const Port = Type.Integer({ minimum: 1, maximum: 65535 });
const strict = { additionalProperties: false };

export const LabelsSchema = Type.Record(Type.String(), Type.String());

export const SelectorRequirementSchema = Type.Object(
  {
    key: Type.String(),
    operator: Type.Union([
      Type.Literal('In'),
      Type.Literal('NotIn'),
      Type.Literal('Exists'),
      Type.Literal('DoesNotExist'),
    ]),
    values: Type.Optional(Type.Array(Type.String())),
  },
  strict,
);

export const SelectorSchema = Type.Object(
  {
    matchLabels: Type.Optional(LabelsSchema),
    matchExpressions: Type.Optional(Type.Array(SelectorRequirementSchema)),
  },
  strict,
);

export const ModeNameSchema = Type.Union([Type.Literal('monitor'), Type.Literal('enforce')]);

export const WorkloadModeSchema = Type.Object(
  { ingress: ModeNameSchema, egress: ModeNameSchema },
  strict,
);

export const WorkloadPatchSchema = Type.Object(
  {
    labels: Type.Optional(LabelsSchema),
    mode: Type.Optional(
      Type.Object(
        { ingress: Type.Optional(ModeNameSchema), egress: Type.Optional(ModeNameSchema) },
        strict,
      ),
    ),
  },
  strict,
);

export const WorkloadSchema = Type.Object(
  {
    name: Name,
    addresses: Type.Array(Type.String()),
    labels: LabelsSchema,
    mode: WorkloadModeSchema,
  },
  strict,
);

export const ProtocolSchema = Type.Union([
  Type.Literal('tcp'),
  Type.Literal('udp'),
  Type.Literal('sctp'),
  Type.Literal('icmp'),
  Type.Literal('icmpv6'),
  Type.Literal('any'),
]);

export const PortSpecSchema = Type.Object(
  { protocol: ProtocolSchema, port: Type.Optional(Port), endPort: Type.Optional(Port) },
  strict,
);

export const ServiceSchema = Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String()),
    ports: Type.Array(PortSpecSchema, { minItems: 1 }),
  },
  strict,
);

export const IpListSchema = Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String()),
    cidrs: Type.Array(Type.String(), { minItems: 1 }),
    except: Type.Optional(Type.Array(Type.String())),
  },
  strict,
);

export const PeerSchema = Type.Object(
  {
    selector: Type.Optional(SelectorSchema),
    ipList: Type.Optional(Name),
    cidr: Type.Optional(Type.String()),
    except: Type.Optional(Type.Array(Type.String())),
  },
  strict,
);

export const PolicyRuleSchema = Type.Object(
  {
    action: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
    peers: Type.Array(PeerSchema, { minItems: 1 }),
    services: Type.Optional(Type.Array(Type.Union([Name, PortSpecSchema]))),
  },
  strict,
);

export const PolicySchema = Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String()),
    scope: SelectorSchema,
    ingress: Type.Optional(Type.Array(PolicyRuleSchema)),
    egress: Type.Optional(Type.Array(PolicyRuleSchema)),
  },
  strict,
);
