/**
 * Memory: a pull lets go of each page once it has handed it on. Pages are several MB each (a 5000-case
 * page parses to ~5 MB), so a page the client keeps after the caller moved on adds to the peak of the
 * whole run. Checked with the garbage collector itself: a page the caller dropped must be collectable
 * while the pull is still going.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { createCommCareClient, type PullRequest } from '../../functions/commcare/index';
import { FAKE_KEY, FAKE_USER, type FakeHq, makeForms, startFakeHq } from './fake-hq';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

let hq: FakeHq | null = null;
afterEach(async () => {
  await hq?.close();
  hq = null;
});

const forms: PullRequest = { project: 'demo', resource: 'form', pageSize: 10 };

/** Pulls `request` and says, two pages before its end, which of the pages handed out are still in memory. */
async function pagesStillHeld(request: PullRequest, concurrency: number): Promise<number[]> {
  const c = createCommCareClient({ baseUrl: hq!.url, username: FAKE_USER, apiKey: FAKE_KEY, concurrency });
  const iterator = c.pages(request)[Symbol.asyncIterator]();
  const handedOut: WeakRef<object>[] = [];
  try {
    for (let n = 0; n < 8; n += 1) {
      const step = await iterator.next();
      if (step.done) throw new Error(`the pull ended after ${n} pages`);
      handedOut.push(new WeakRef(step.value.records));
    }
    // Past the current job (WeakRef targets are kept until it ends), then a full collection.
    await new Promise((resolve) => setImmediate(resolve));
    collectGarbage();
    // The last page handed out may still be the generator's current one; every earlier one must be gone.
    return handedOut.flatMap((ref, n) => (n < handedOut.length - 1 && ref.deref() !== undefined ? [n] : []));
  } finally {
    await iterator.return?.(undefined);
  }
}

describe('page lifetime', () => {
  it('lets go of the first pages of a windowed pull once the caller has them', async () => {
    hq = await startFakeHq({ forms: makeForms(100) });

    expect(await pagesStillHeld(forms, 4)).toEqual([]);
  });

  it('lets go of each page of a sequential pull once the caller has it', async () => {
    hq = await startFakeHq({ forms: makeForms(100) });

    expect(await pagesStillHeld(forms, 1)).toEqual([]);
  });
});
