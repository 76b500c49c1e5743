/** Stable codes; branch on these, never on the message. */
export type NftErrorCode =
  | 'NFT_INVALID' // the transaction or command was malformed before reaching nftables
  | 'NFT_APPLY_FAILED' // nftables (kernel or parser) refused the batch; nothing was changed
  | 'NFT_LIST_FAILED' // a list/reset command failed
  | 'NFT_UNAVAILABLE'; // no usable backend (library missing, binary missing, driver closed)

/** The one error type of @bulkhead/nftables. `cause` holds nft's own error text when there is one. */
export class NftError extends Error {
  readonly code: NftErrorCode;
  override readonly cause: unknown;

  constructor(code: NftErrorCode, message: string, options?: { cause?: unknown }) {
    super(message);
    this.name = 'NftError';
    this.code = code;
    this.cause = options?.cause;
  }
}
