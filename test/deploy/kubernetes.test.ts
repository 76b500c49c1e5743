import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonSet, type IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { type IService, Service } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { DEPLOY, helpOf, unknownFlags } from './tools.js';

// The Kubernetes OpenAPI schemas as compiled by kubernetes-models (npm, offline): types,
// required fields and enums of every object. The OpenAPI schemas allow unknown fields, so the
// fields Bulkhead relies on are asserted one by one below.
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/DaemonSet': DaemonSet,
};

interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [key: string]: unknown;
}

const DIR = join(DEPLOY, 'kubernetes');
const docs: Doc[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(DIR, f), 'utf8')).map((d) => {
      if (d.errors.length > 0) throw new Error(`${f}: ${d.errors[0]!.message}`);
      return d.toJSON() as Doc;
    }),
  );
const find = <T>(kind: string, name: string) =>
  docs.find((d) => d.kind === kind && d.metadata.name === name) as unknown as T;

describe('Kubernetes manifests (deploy/kubernetes)', () => {
  it.each(docs.map((d) => [`${d.kind}/${d.metadata.name}`, d] as const))(
    '%s is valid against the Kubernetes schema',
    (_, doc) => {
      const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
      expect(Model, `no schema for ${doc.apiVersion} ${doc.kind}`).toBeDefined();
      expect(() => new Model!(doc as never).validate()).not.toThrow();
      if (doc.kind !== 'Namespace') expect(doc.metadata.namespace).toBe('bulkhead');
    },
  );

  it('the schema check can fail (a boolean given as a string is refused)', () => {
    const ds = structuredClone(find<IDaemonSet>('DaemonSet', 'bulkhead-agent'));
    (ds.spec!.template.spec as unknown as Record<string, unknown>).hostNetwork = 'yes';
    expect(() => new DaemonSet(ds).validate()).toThrow(/hostNetwork must be boolean/);
  });

  it('the agent DaemonSet: host network, NET_ADMIN only, CA and token from the Secret', () => {
    const ds = find<IDaemonSet>('DaemonSet', 'bulkhead-agent');
    const pod = ds.spec!.template.spec!;
    expect(ds.spec!.template.metadata!.labels).toMatchObject(ds.spec!.selector.matchLabels!);
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    const [agent] = pod.containers;
    expect(agent!.securityContext!.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN'] });
    expect(agent!.securityContext!.allowPrivilegeEscalation).toBe(false);
    expect(agent!.securityContext!.privileged).toBeUndefined();
    const args = agent!.args!;
    const arg = (flag: string) => args[args.indexOf(flag) + 1];
    const secret = pod.volumes!.find((v) => v.secret)!;
    expect(secret.secret!.secretName).toBe('bulkhead-agent-bootstrap');
    const mount = agent!.volumeMounts!.find((m) => m.name === secret.name)!;
    const files = secret.secret!.items!.map((i) => `${mount.mountPath}/${i.path}`);
    expect(files).toEqual(
      expect.arrayContaining([arg('--ca-cert'), arg('--bootstrap-token-file')]),
    );
    const stateMount = agent!.volumeMounts!.find((m) => m.mountPath === arg('--state-dir'));
    expect(pod.volumes!.find((v) => v.name === stateMount?.name)?.hostPath).toBeDefined();
    expect(unknownFlags(args, helpOf('packages/agent/dist/main.js'))).toEqual([]);
    // $(VAR) in args is expanded by the kubelet only for variables the container defines.
    for (const m of args.join(' ').matchAll(/\$\((\w+)\)/g)) {
      expect(agent!.env!.map((e) => e.name)).toContain(m[1]);
    }
    // The agent reaches the control plane through its Service, checking the name every
    // control plane certificate holds.
    const svc = find<IService>('Service', 'bulkhead-control-plane');
    expect(arg('--control-plane')).toBe(
      `${svc.metadata!.name}.${svc.metadata!.namespace}.svc.cluster.local:${svc.spec!.ports!.find((p) => p.name === 'grpc')!.port}`,
    );
    expect(arg('--server-name')).toBe('bulkhead-control-plane');
  });

  it('the control plane: one pod on its PVC, selected by its Service on named ports', () => {
    const dep = find<IDeployment>('Deployment', 'bulkhead-control-plane');
    const svc = find<IService>('Service', 'bulkhead-control-plane');
    const pod = dep.spec!.template.spec!;
    expect(dep.spec!.replicas).toBe(1);
    expect(dep.spec!.strategy!.type).toBe('Recreate');
    expect(dep.spec!.template.metadata!.labels).toMatchObject(dep.spec!.selector.matchLabels!);
    expect(dep.spec!.template.metadata!.labels).toMatchObject(svc.spec!.selector!);
    const [cp] = pod.containers;
    const named = new Set(cp!.ports!.map((p) => p.name));
    for (const p of svc.spec!.ports!) expect(named).toContain(p.targetPort);
    const claim = pod.volumes!.find((v) => v.persistentVolumeClaim)!.persistentVolumeClaim!;
    expect(find('PersistentVolumeClaim', claim.claimName)).toBeDefined();
    const args = cp!.args!;
    const data = cp!.volumeMounts!.find(
      (m) => m.mountPath === args[args.indexOf('--data-dir') + 1],
    );
    expect(data?.name).toBe(pod.volumes!.find((v) => v.persistentVolumeClaim)!.name);
    expect(cp!.securityContext!.capabilities!.drop).toEqual(['ALL']);
    expect(pod.securityContext!.runAsNonRoot).toBe(true);
    expect(unknownFlags(args, helpOf('packages/control-plane/dist/main.js'))).toEqual([]);
  });
});
