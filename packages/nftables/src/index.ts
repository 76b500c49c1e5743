export type { NftCommand, NftDriver, NftObject } from './driver.js';
