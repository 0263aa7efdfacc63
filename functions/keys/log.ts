/** The logging the core needs; the handler passes Powertools' Logger, tests pass a recorder. */
export interface KeyLog {
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

export const silentLog: KeyLog = { info() {}, warn() {}, error() {} };
