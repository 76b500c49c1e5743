import { describe, expect, it } from 'vitest';
import { createExecNft, createLibNft, createNftDriver, NftError, Transaction } from './index.js';

const tx = () => new Transaction().add({ table: { family: 'inet', name: 'bhtest' } });

async function rejection(p: Promise<unknown>): Promise<NftError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(NftError);
  return err as NftError;
}

describe('createNftDriver', () => {
  // The machines Bulkhead runs on have libnftables.so.1 (Debian's nftables package).
  it('prefers libnftables in auto mode and says so', () => {
    const nft = createNftDriver();
    expect(nft.backend).toBe('libnftables');
    nft.close();
  });

  it('gives the nft binary when asked', () => {
    const nft = createNftDriver({ backend: 'nft' });
    expect(nft.backend).toBe('nft');
    nft.close();
  });

  it('reports a missing binary as NFT_UNAVAILABLE', () => {
    expect(() => createNftDriver({ backend: 'nft', nftPath: '/nonexistent/nft' })).toThrow(
      expect.objectContaining({ code: 'NFT_UNAVAILABLE' }),
    );
  });
});

describe('backends without a kernel', () => {
  it('libnftables: a library that does not load is NFT_UNAVAILABLE', () => {
    expect(() => createLibNft({ libraryPath: '/nonexistent/libnftables.so.1' })).toThrow(
      expect.objectContaining({ code: 'NFT_UNAVAILABLE' }),
    );
  });

  it('nft: a binary that cannot run is NFT_UNAVAILABLE on apply', async () => {
    const nft = createExecNft({ nftPath: '/nonexistent/nft' });
    expect((await rejection(nft.apply(tx()))).code).toBe('NFT_UNAVAILABLE');
  });

  it.each([
    ['libnftables', () => createLibNft()],
    ['nft', () => createExecNft()],
  ])('%s: refuses a queued error and any use after close', async (_name, make) => {
    const nft = make();
    const bad = tx().add({ chain: { family: 'inet', table: 'bhtest', name: '' } });
    expect((await rejection(nft.apply(bad))).code).toBe('NFT_INVALID');
    expect((await rejection(nft.list({ add: { table: {} } }))).code).toBe('NFT_INVALID');
    nft.close();
    expect((await rejection(nft.apply(tx()))).code).toBe('NFT_UNAVAILABLE');
  });
});
