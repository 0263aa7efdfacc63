export { createSink, readManifests } from '../../functions/sinks';

import { LocalObjectStore } from '../../functions/sinks/store/local';

export function LocalObjectStoreFor(dir: string): LocalObjectStore {
  return new LocalObjectStore(dir);
}
