// Minimal typings for the part of better-sqlite3 12 this package uses (@types/better-sqlite3
// is not installed in the workspace).
declare module 'better-sqlite3' {
  namespace Database {
    interface RunResult {
      changes: number;
      lastInsertRowid: number | bigint;
    }
    interface Statement<R = unknown> {
      run(...params: unknown[]): RunResult;
      get(...params: unknown[]): R | undefined;
      all(...params: unknown[]): R[];
      iterate(...params: unknown[]): IterableIterator<R>;
      /** Rows as arrays of their columns from now on (false: as objects again). */
      raw(toggle?: boolean): Statement<unknown[]>;
    }
    interface Database {
      prepare<R = unknown>(sql: string): Statement<R>;
      exec(sql: string): this;
      pragma(source: string, options?: { simple?: boolean }): unknown;
      transaction<F extends (...args: never[]) => unknown>(fn: F): F;
      close(): this;
      readonly open: boolean;
      readonly inTransaction: boolean;
    }
  }
  interface DatabaseConstructor {
    new (
      filename: string,
      options?: { readonly?: boolean; fileMustExist?: boolean },
    ): Database.Database;
  }
  const Database: DatabaseConstructor;
  export = Database;
}
