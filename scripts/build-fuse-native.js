#!/usr/bin/env node
/*
 * Patches fuse-native and compiles its addon: dfs-mount needs fixes to fuse-native 2.2.6's
 * C layer and index.js (patches/fuse-native+2.2.6.patch says which and why; mount/README.md
 * how the mount uses them). The library is not copied into the repository: npm installs it
 * as published, and this script
 *
 *   1. puts back the files the patch touches as npm installed them (kept beside them in
 *      node_modules/fuse-native/.dfs-pristine/ the first time), then applies the patch with
 *      GNU patch, so a changed patch replaces the old one rather than piling onto it;
 *   2. compiles the addon with node-gyp (npm's own copy) against this Node's headers
 *      (--nodedir, so nothing is downloaded) into build/Release, which node-gyp-build loads
 *      before the prebuilds; libfuse's headers come with fuse-shared-library-linux;
 *   3. checks that the addon loads and is the patched one, and records the patch's hash in
 *      build/dfs-patch.json.
 * When that record matches the patch, it does nothing: it runs from `npm ci` (the
 * postinstall script; npm 11 runs the root package's own scripts but not those of its
 * dependencies) and from scripts/setup.sh before every test run, so it must be cheap when
 * the work is done. Needs GNU patch, make, g++ and python3 (setup.sh installs them).
 *
 *   node scripts/build-fuse-native.js           patch and build if not current
 *   node scripts/build-fuse-native.js --check   exit 0 if current, 1 if not; changes nothing
 *   node scripts/build-fuse-native.js --force   patch and build again
 */
'use strict';

const { spawnSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const PACKAGE = 'fuse-native';
const VERSION = '2.2.6';
const PATCH_FILE = path.join(ROOT, 'patches', `${PACKAGE}+${VERSION}.patch`);
/** Must match DFS_PATCH_LEVEL in the patch (and FUSE_NATIVE_PATCH_LEVEL in mount/fuse-mount.ts). */
const PATCH_LEVEL = 10;
const PRISTINE_DIR = '.dfs-pristine';
const STAMP_FILE = path.join('build', 'dfs-patch.json');
const ADDON_FILE = path.join('build', 'Release', 'fuse.node');
/** The output of a failed step shown, at most. */
const OUTPUT_TAIL_BYTES = 8000;

function say(message) {
  process.stdout.write(`build-fuse-native: ${message}\n`);
}

class BuildError extends Error {}

function sha256(data) {
  return createHash('sha256').update(data).digest('hex');
}

/** The files a unified diff changes, as paths relative to the package (after -p1). */
function patchedFiles(patchText) {
  const files = [];
  for (const line of patchText.split('\n')) {
    const m = /^\+\+\+ b\/(\S+)/.exec(line);
    if (m) files.push(m[1]);
  }
  if (files.length === 0) throw new BuildError('the patch changes no file');
  return files;
}

function runPatch(pkgDir, patchFile, args) {
  const r = spawnSync('patch', ['-p1', '--batch', '--silent', '--no-backup-if-mismatch', '-r', '-', ...args, '-i', patchFile], {
    cwd: pkgDir,
    encoding: 'utf8',
  });
  if (r.error && r.error.code === 'ENOENT') throw new BuildError("GNU patch is not installed (Debian's `patch` package; scripts/setup.sh installs it)");
  return { ok: r.status === 0, output: `${r.stdout || ''}${r.stderr || ''}` };
}

/**
 * Applies `patchFile` to the package in `pkgDir`, starting from the files as npm installed
 * them. Returns 'applied' or 'already' (the files were patched by this very patch and no
 * pristine copy was kept, as after a patch applied by hand). Idempotent.
 */
function applyPatch(pkgDir, patchFile = PATCH_FILE) {
  const files = patchedFiles(fs.readFileSync(patchFile, 'utf8'));
  const pristineDir = path.join(pkgDir, PRISTINE_DIR);
  if (fs.existsSync(pristineDir)) {
    for (const file of files) fs.copyFileSync(path.join(pristineDir, file), path.join(pkgDir, file));
  } else if (!runPatch(pkgDir, patchFile, ['--dry-run', '--forward']).ok) {
    if (runPatch(pkgDir, patchFile, ['--dry-run', '--reverse']).ok) return 'already';
    throw new BuildError(
      `${pkgDir} is neither ${PACKAGE} ${VERSION} as published nor patched by ${path.basename(patchFile)}: reinstall it (rm -rf ${pkgDir} && npm ci)`,
    );
  } else {
    for (const file of files) {
      fs.mkdirSync(path.dirname(path.join(pristineDir, file)), { recursive: true });
      fs.copyFileSync(path.join(pkgDir, file), path.join(pristineDir, file));
    }
  }
  const r = runPatch(pkgDir, patchFile, ['--forward']);
  if (!r.ok) throw new BuildError(`${path.basename(patchFile)} does not apply to ${pkgDir}:\n${r.output}`);
  return 'applied';
}

function findPackage() {
  let pkgJson;
  try {
    pkgJson = require.resolve(`${PACKAGE}/package.json`, { paths: [ROOT] });
  } catch {
    throw new BuildError(`${PACKAGE} is not installed: run npm ci`);
  }
  const pkgDir = path.dirname(pkgJson);
  const version = JSON.parse(fs.readFileSync(pkgJson, 'utf8')).version;
  if (version !== VERSION) throw new BuildError(`${PACKAGE} is ${version}, but the patch is for ${VERSION}: pin it in package.json or remake the patch`);
  return pkgDir;
}

/** npm's own node-gyp: npm puts its path in npm_config_node_gyp for scripts it runs. */
function findNodeGyp() {
  const inNpm = (npmDir) => path.join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const candidates = [
    () => process.env.npm_config_node_gyp,
    () => inNpm(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm')),
    () => {
      const r = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' });
      return r.status === 0 ? inNpm(path.join(r.stdout.trim(), 'npm')) : null;
    },
  ];
  for (const candidate of candidates) {
    const file = candidate();
    if (file && fs.existsSync(file)) return file;
  }
  throw new BuildError('node-gyp is not found (it comes with npm)');
}

/** This Node's own headers, so that node-gyp downloads nothing (there is no network). */
function findNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const dir = path.resolve(path.dirname(process.execPath), '..');
  const headers = path.join(dir, 'include', 'node');
  return fs.existsSync(path.join(headers, 'node_api.h')) && fs.existsSync(path.join(headers, 'common.gypi')) ? dir : null;
}

function compile(pkgDir) {
  const args = [findNodeGyp(), 'rebuild'];
  const nodeDir = findNodeDir();
  if (nodeDir) args.push(`--nodedir=${nodeDir}`);
  const r = spawnSync(process.execPath, args, { cwd: pkgDir, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) {
    const output = `${r.stdout || ''}${r.stderr || ''}`;
    throw new BuildError(`node-gyp rebuild failed (make, g++ and python3 are needed):\n${output.slice(-OUTPUT_TAIL_BYTES)}`);
  }
}

/** Loads the package in a child process: the addon must be the patched one. */
function verify(pkgDir) {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(require(process.argv[1]).DFS_PATCH_LEVEL))', pkgDir], {
    encoding: 'utf8',
  });
  if (r.status === 0 && r.stdout === String(PATCH_LEVEL)) return;
  if (/libfuse\.so\.2/.test(r.stderr || '')) {
    // Built, but libfuse 2 itself is missing: the addon cannot be loaded to check it.
    say("warning: libfuse.so.2 is missing (Debian's libfuse2); the patched addon is built but not checked");
    return;
  }
  throw new BuildError(`the built ${PACKAGE} does not load as the patched one:\n${(r.stderr || r.stdout || '').slice(-OUTPUT_TAIL_BYTES)}`);
}

function readStamp(pkgDir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(pkgDir, STAMP_FILE), 'utf8'));
  } catch {
    return null;
  }
}

function wantedStamp() {
  return { patchSha256: sha256(fs.readFileSync(PATCH_FILE)), patchLevel: PATCH_LEVEL, platform: process.platform, arch: process.arch };
}

function isCurrent(pkgDir) {
  const stamp = readStamp(pkgDir);
  const want = wantedStamp();
  return (
    stamp !== null &&
    Object.keys(want).every((key) => stamp[key] === want[key]) &&
    fs.existsSync(path.join(pkgDir, ADDON_FILE))
  );
}

function main(argv) {
  const check = argv.includes('--check');
  const force = argv.includes('--force');
  const pkgDir = findPackage();
  if (!force && isCurrent(pkgDir)) {
    say(`${PACKAGE} ${VERSION} is patched and built`);
    return 0;
  }
  if (check) {
    say(`${PACKAGE} ${VERSION} is not patched and built: run node scripts/build-fuse-native.js`);
    return 1;
  }
  const started = Date.now();
  fs.rmSync(path.join(pkgDir, STAMP_FILE), { force: true });
  const applied = applyPatch(pkgDir);
  compile(pkgDir);
  verify(pkgDir);
  fs.writeFileSync(path.join(pkgDir, STAMP_FILE), JSON.stringify(wantedStamp(), null, 2) + '\n');
  say(`${PACKAGE} ${VERSION}: patch ${applied === 'applied' ? 'applied' : 'was already applied'}, addon built (${Date.now() - started} ms)`);
  return 0;
}

module.exports = { applyPatch, patchedFiles, PATCH_FILE, PATCH_LEVEL, PRISTINE_DIR };

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof BuildError)) throw err;
    process.stderr.write(`build-fuse-native: error: ${err.message}\n`);
    process.exitCode = 1;
  }
}
