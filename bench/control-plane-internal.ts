// The control plane's internal modules the in-process benches drive (not its public API): types
// from the source tree's path, values from the same files relative to bench/dist at run time.
const internal = <M>(file: string): Promise<M> =>
  import(new URL(`../../packages/control-plane/dist/${file}`, import.meta.url).href) as Promise<M>;

export const { createDomains } =
  await internal<typeof import('../packages/control-plane/dist/domains.js')>('domains.js');
export const { createSqliteStores } =
  await internal<typeof import('../packages/control-plane/dist/store/index.js')>('store/index.js');
export const { createStreamRegistry } =
  await internal<typeof import('../packages/control-plane/dist/fleet/streams.js')>(
    'fleet/streams.js',
  );

/**
 * Writes a state's services, IP lists and policies, and a revision `note` of them (its
 * workloads are the caller's: each bench stores them its own way). Call inside a transaction.
 */
export function storePolicyObjects(
  stores: ReturnType<typeof createSqliteStores>,
  state: import('@bulkhead/policy').PolicyState,
  note: string,
): void {
  for (const s of state.services) stores.policy.putResource('services', s.name, s);
  for (const l of state.ipLists) stores.policy.putResource('ip_lists', l.name, l);
  for (const p of state.policies) stores.policy.putResource('policies', p.name, p);
  stores.revisions.addRevision('bench', note, { ...state, workloads: [] });
}
