import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

/** Which process holds a lease (or a lock), as far as another process can check it. */
export interface HolderProcess {
  /** `os.hostname()`. */
  readonly host: string;
  readonly pid: number;
  /**
   * Boot id and PID namespace (Linux), so that two containers sharing a host name (`--network host`,
   * a fixed `--hostname`) are not taken for one machine whose process table we can read. Empty when
   * unknown; then the host name alone decides.
   */
  readonly machine: string;
}

function readQuietly(read: () => string): string {
  try {
    return read().trim();
  } catch {
    return '';
  }
}

/** This process. */
export function currentProcess(): HolderProcess {
  const bootId = readQuietly(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'));
  const pidNamespace = readQuietly(() => readlinkSync('/proc/self/ns/pid'));
  return {
    host: hostname(),
    pid: process.pid,
    machine: bootId || pidNamespace ? `${bootId}/${pidNamespace}` : '',
  };
}

/**
 * Whether a process of this machine is running: `process.kill(pid, 0)` sends nothing and throws ESRCH
 * when there is no such process (EPERM means it exists but belongs to another user).
 */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
