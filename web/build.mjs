// Builds the connection map's assets with esbuild: one JS bundle (D3 included,
// nothing fetched at run time), one CSS file and index.html, into the folder
// given as the first argument. crates/map's build.rs runs this into OUT_DIR and
// embeds the result; scripts/build-web runs it into web/dist for the browser
// benchmarks.
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] ?? join(here, 'dist'));

await mkdir(outdir, { recursive: true });
await build({
  entryPoints: [join(here, 'src/app.js'), join(here, 'src/app.css')],
  outdir,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome110', 'firefox110', 'safari16'],
  legalComments: 'none',
  logLevel: 'warning',
  entryNames: '[name]',
});
await copyFile(join(here, 'src/index.html'), join(outdir, 'index.html'));
