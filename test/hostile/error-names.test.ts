/** Error names as the deployed (minified) bundle reports them: the state machine's retry rules match on them. */
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { describe, expect, it } from 'vitest';

describe('sink errors in a minified bundle', () => {
  it('keep their class names, so SinkConfigError is never retried', () => {
    const bundle = buildSync({
      stdin: {
        contents:
          "import * as e from './functions/sinks/errors';\n" +
          "module.exports = Object.keys(e).map((k) => [k, new e[k]('x').name]);",
        resolveDir: join(__dirname, '..', '..'),
        loader: 'ts',
      },
      bundle: true,
      minify: true,
      platform: 'node',
      format: 'cjs',
      write: false,
    });
    const module = { exports: [] as [string, string][] };
    new Function('module', 'exports', 'require', bundle.outputFiles[0]?.text ?? '')(
      module,
      module.exports,
      require,
    );

    for (const [exported, name] of module.exports) expect(name).toBe(exported);
    expect(module.exports.map(([k]) => k)).toContain('SinkConfigError');
  });
});
