import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import type { IpList, Labels, Policy, Selector, Service, Workload, WorkloadMode } from './model.js';
import {
  IpListSchema,
  type LabelsSchema,
  PolicySchema,
  type SelectorSchema,
  ServiceSchema,
  type WorkloadModeSchema,
  WorkloadPatchSchema,
  type WorkloadSchema,
} from './schema.js';

// The schemas and the model types must describe the same objects; `tsc --build` fails
// here if one of them drifts from the other.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const agree: [
  Same<Static<typeof PolicySchema>, Policy>,
  Same<Static<typeof ServiceSchema>, Service>,
  Same<Static<typeof IpListSchema>, IpList>,
  Same<Static<typeof SelectorSchema>, Selector>,
  Same<Static<typeof LabelsSchema>, Labels>,
  Same<Static<typeof WorkloadModeSchema>, WorkloadMode>,
  Same<Static<typeof WorkloadSchema>, Workload>,
] = [true, true, true, true, true, true, true];

describe('schemas', () => {
  it('match the model types', () => {
    expect(agree.every(Boolean)).toBe(true);
  });

  it('are plain JSON Schema that a route can serialize', () => {
    for (const schema of [PolicySchema, ServiceSchema, IpListSchema, WorkloadPatchSchema]) {
      const json = JSON.parse(JSON.stringify(schema));
      expect(json.type).toBe('object');
      expect(json.additionalProperties).toBe(false);
    }
  });

  it('check structure only', () => {
    const policy: Policy = {
      name: 'web',
      scope: { matchLabels: { app: 'web' } },
      ingress: [{ action: 'allow', peers: [{ cidr: 'not checked by the schema' }] }],
    };
    expect(Value.Check(PolicySchema, policy)).toBe(true);
    expect(Value.Check(PolicySchema, { ...policy, name: 'Web' })).toBe(false);
    expect(Value.Check(WorkloadPatchSchema, { mode: { egress: 'enforce' } })).toBe(true);
  });
});
