/**
 * How far V8 lets the heap grow: past what the last full collection left alive, and (the CLI only) in
 * the young generation.
 *
 * An export's live set is small and flat (a page or two of records, a sink batch), but it allocates
 * fast, and many records live long enough to be promoted to the old generation before they die. V8 then
 * grows the old generation by a factor of up to 4 of the live size before collecting it, so peak memory
 * rose with the length of the run (≈165 MB at 10,000 forms, 250–290 MB from 300,000 on, while the live
 * set stayed near 50 MB). Capping the factor at 1.6 keeps the peak within ~180 MB at any length, with no
 * measurable CPU cost in `npm run bench:report` (major collections of a 50 MB heap are cheap).
 *
 * `--heap-growing-percent` is read at every collection, so setting it once the process runs takes effect
 * from the next one; unlike `--max-old-space-size` it is no ceiling, so a larger live set (a wide query,
 * a big sink batch) still gets the memory it needs instead of a crash.
 */
import { applyV8Flag } from '../common/v8-flags';

export const HEAP_GROWING_PERCENT = 60;

/**
 * The CLI's tighter cap: 1.4 times the live set. On 50,000 forms with the DET comparison's workbook
 * (`--batch-size 1000`, 8 runs each, interleaved) the median peak RSS went 131 → 121 MB, the CPU within
 * the runs' noise (≈4 s either way): the live set is ~35 MB, so the heap's headroom goes from ~21 to
 * ~14 MB and a major collection of it still takes a few ms. Like the young generation's cap below, a
 * trade of CPU for memory that the CLI makes and the export function does not.
 */
export const CLI_HEAP_GROWING_PERCENT = 40;

/**
 * The young generation (where every parsed record is born) starts at 1 MB per semi-space and V8 doubles
 * it, up to 16 MB, whenever enough survives a scavenge: an export, whose parsed pages outlive a few
 * scavenges, soon holds two 16 MB semi-spaces resident, ~30 MB of a ~175 MB peak. A growth factor of 1
 * keeps it at its start size. Records that outlive the small young generation are then promoted and
 * collected by the (capped) old generation instead: measured on 50,000 forms with the DET comparison's
 * workbook (`--batch-size 1000`, 3 runs each), peak RSS 175 → 144 MB for ~0.1-0.3 s more CPU in
 * ~4.2 s (about 450 scavenges instead of 80). Like the flag above, V8 reads it whenever it considers
 * growing the space, so it applies from the process's next scavenge.
 *
 * A trade of CPU for memory, so the CLI makes it (a laptop or a small VM runs other things) and the
 * export function does not: Lambda bills the memory size it is given, whatever the process touches.
 */
export const SEMI_SPACE_GROWTH_FACTOR = 1;

/** Applies `percent` (`HEAP_GROWING_PERCENT` unless given) to this process (once; later calls do nothing). */
export function limitHeapGrowth(percent = HEAP_GROWING_PERCENT): void {
  applyV8Flag(`--heap-growing-percent=${percent}`);
}

/** Applies `SEMI_SPACE_GROWTH_FACTOR` to this process (once; later calls do nothing). */
export function keepYoungGenerationSmall(): void {
  applyV8Flag(`--semi-space-growth-factor=${SEMI_SPACE_GROWTH_FACTOR}`);
}
