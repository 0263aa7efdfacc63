// Module customization hooks (node --import <register script>) that append the URL of every module a
// process loads to the file RECORD_IMPORTS names, one a line: which chunks of the bundle a run loads.
import { appendFileSync } from 'node:fs';

export async function load(url, context, nextLoad) {
  if (process.env.RECORD_IMPORTS) appendFileSync(process.env.RECORD_IMPORTS, `${url}\n`);
  return nextLoad(url, context);
}
