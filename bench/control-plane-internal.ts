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
