import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { processIsAlive } from '../../checkpoints/process';
import { PreconditionFailedError, SinkError } from '../errors';
import {
  ABANDONED_AFTER_MS,
  type ObjectStore,
  type ObjectUpload,
  type PutCondition,
  type StoredObject,
} from './types';
import { CountingStream, writeWithBackpressure } from './upload';

/** This host's name as it may appear in a file name. */
const HOST = hostname().replace(/[^A-Za-z0-9.-]/g, '_');

/**
 * The temporary name of an object being written: `<name>.<pid>@<host>.tmp`, so the next run can tell
 * a file whose writer is gone (killed) from one a live run is writing.
 */
function temporaryName(path: string): string {
  return `${path}.${process.pid}@${HOST}.${randomUUID().slice(0, 8)}.tmp`;
}

const TEMPORARY = /\.(\d+)@([A-Za-z0-9._-]+)\.[0-9a-f]{8}\.tmp$/;

function etagOf(body: string | Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

/**
 * A local folder laid out like the S3 prefix. Objects are written to `name.<pid>@<host>.<random>.tmp` and renamed, so a
 * file with the final name is always complete. Conditional writes are best effort on one machine
 * (create uses an atomic hard link; replace compares a content hash, then renames).
 */
export class LocalObjectStore implements ObjectStore {
  readonly root: string;

  constructor(folder: string) {
    this.root = resolve(folder);
  }

  private path(key: string): string {
    const path = resolve(this.root, ...key.split('/'));
    if (path !== this.root && !path.startsWith(this.root + sep)) {
      throw new SinkError(`Object key "${key}" escapes the output folder ${this.root}`);
    }
    return path;
  }

  uri(key: string): string {
    return this.path(key);
  }

  openUpload(key: string, _contentType: string): ObjectUpload {
    const path = this.path(key);
    const tmp = temporaryName(path);
    const body = new CountingStream();
    let file: ReturnType<typeof createWriteStream> | undefined;
    const ready = mkdir(dirname(path), { recursive: true }).then(() => {
      file = createWriteStream(tmp);
      body.pipe(file);
    });
    return {
      stream: body,
      write: async (chunk) => {
        await ready;
        await writeWithBackpressure(body, chunk);
      },
      complete: async () => {
        await ready;
        if (!body.writableEnded) body.end();
        await finished(file!);
        await rename(tmp, path);
        return { bytes: body.bytes };
      },
      abort: async () => {
        await ready.catch(() => undefined);
        body.destroy();
        if (file) {
          // The file may not be open yet: a stream destroyed before its open completes still creates
          // the file afterwards, so removing it must wait until the stream has closed.
          const closed = file.closed ? Promise.resolve() : once(file, 'close');
          file.destroy();
          await closed;
        }
        await rm(tmp, { force: true });
      },
    };
  }

  /**
   * Runs a compare-and-replace of `path` under `<path>.lock.tmp` (created with O_EXCL), so that of two
   * writers holding the same version only one replaces it: comparing, then renaming, is not atomic
   * alone. A lock left by a process that died between taking and dropping it is removed.
   */
  private async withLock<T>(path: string, action: () => Promise<T>): Promise<T> {
    const lock = `${path}.lock.tmp`;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await writeFile(lock, String(process.pid), { flag: 'wx' });
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const owner = Number(await readFile(lock, 'utf8').catch(() => ''));
      if (Number.isInteger(owner) && owner > 0 && !processIsAlive(owner)) {
        await rm(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new SinkError(
          `${path} stayed locked by process ${owner || 'unknown'} for 10 s; if no run is active, delete ${lock}`,
        );
      }
      await delay(5 + Math.floor(Math.random() * 20));
    }
    try {
      return await action();
    } finally {
      await rm(lock, { force: true });
    }
  }

  async put(key: string, body: string, _contentType: string, condition: PutCondition = {}) {
    const path = this.path(key);
    await mkdir(dirname(path), { recursive: true });
    const tmp = temporaryName(path);
    await writeFile(tmp, body);
    try {
      if (condition.ifNoneMatch) {
        try {
          await link(tmp, path); // fails with EEXIST: an atomic create-if-absent
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
            throw new PreconditionFailedError(`${path} already exists (conditional create refused)`, {
              cause: error,
            });
          }
          throw error;
        }
        return { etag: etagOf(body) };
      }
      const { ifMatch } = condition;
      if (ifMatch) {
        await this.withLock(path, async () => {
          const current = await this.get(key);
          if (!current || current.etag !== ifMatch) {
            throw new PreconditionFailedError(
              `${path} changed since it was read (conditional write refused)`,
            );
          }
          await rename(tmp, path);
        });
      } else {
        await rename(tmp, path);
      }
      return { etag: etagOf(body) };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async get(key: string): Promise<StoredObject | null> {
    try {
      const bytes = await readFile(this.path(key));
      return { body: bytes.toString('utf8'), etag: etagOf(bytes) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  }

  async openRead(key: string): Promise<Readable> {
    const stream = createReadStream(this.path(key));
    await once(stream, 'open');
    return stream;
  }

  async delete(key: string, ifMatch?: string): Promise<void> {
    const path = this.path(key);
    const remove = () =>
      unlink(path).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
    if (!ifMatch) return remove();
    await this.withLock(path, async () => {
      const current = await this.get(key);
      if (!current) return;
      if (current.etag !== ifMatch) throw new PreconditionFailedError(`${path} changed; not deleted`);
      await remove();
    });
  }

  async removeAbandoned(folders: readonly string[], olderThanMs = ABANDONED_AFTER_MS): Promise<string[]> {
    const removed: string[] = [];
    for (const folder of folders) {
      let entries: string[];
      try {
        entries = await readdir(this.path(folder));
      } catch {
        continue;
      }
      for (const name of entries) {
        if (!name.endsWith('.tmp') || name.endsWith('.lock.tmp')) continue;
        const file = join(this.path(folder), name);
        const writer = TEMPORARY.exec(name);
        let abandoned: boolean;
        if (writer) {
          abandoned = writer[2] === HOST && !processIsAlive(Number(writer[1]));
        } else {
          // Written by a version that did not name its process: judged by age.
          const info = await stat(file).catch(() => null);
          abandoned = info !== null && Date.now() - info.mtimeMs > olderThanMs;
        }
        if (abandoned) {
          await rm(file, { force: true });
          removed.push(file);
        }
      }
    }
    return removed;
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw error;
      }
      for (const entry of entries) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else if (!entry.name.endsWith('.tmp')) out.push(relative(this.root, full).split(sep).join('/'));
      }
    };
    await walk(this.root);
    return out.filter((k) => k.startsWith(prefix)).sort();
  }
}
