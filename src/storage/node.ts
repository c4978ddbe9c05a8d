// The Node implementation of the storage interface: node:fs, node:path and the process, unchanged.
// The browser bundle replaces this module with ./browser.ts (scripts/build_browser.ts).

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { homedir, hostname, tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';
import type { Storage, StorageHost } from './types.js';

const host: StorageHost = {
  pid: process.pid,
  hostname,
  pidAlive(pid) {
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  },
  onExit(fn) {
    process.on('exit', fn);
    return () => process.removeListener('exit', fn);
  },
  randomHex: (bytes) => randomBytes(bytes).toString('hex'),
  warn: (message, type) => process.emitWarning(message, { type }),
  inflateRaw: (data, maxOutputLength) => inflateRawSync(data, { maxOutputLength }),
  tmpdir,
  homedir,
  fileURLToPath: (url) => fileURLToPath(url),
};

const nodeStorage: Storage = {
  kind: 'node',
  path,
  host,
  readFile: fsp.readFile as Storage['readFile'],
  writeFile: (p, data) => fsp.writeFile(p, data),
  appendFile: (p, data) => fsp.appendFile(p, data),
  stat: (p) => fsp.stat(p),
  readdir: fsp.readdir as Storage['readdir'],
  mkdir: (p, o) => fsp.mkdir(p, o),
  rm: (p, o) => fsp.rm(p, o),
  rename: (a, b) => fsp.rename(a, b),
  unlink: (p) => fsp.unlink(p),
  copyFile: (a, b) => fsp.copyFile(a, b),
  link: (a, b) => fsp.link(a, b),
  realpath: (p) => fsp.realpath(p),
  symlink: (target, p) => fsp.symlink(target, p),
  mkdtemp: (prefix) => fsp.mkdtemp(prefix),
  open: (p, flags, mode) => fsp.open(p, flags, mode),
  existsSync: (p) => fs.existsSync(p),
  statSync: (p) => fs.statSync(p),
  readFileSync: (p, enc) => fs.readFileSync(p, enc),
  readdirSync: fs.readdirSync as Storage['readdirSync'],
  unlinkSync: (p) => fs.unlinkSync(p),
  mkdirSync: (p, o) => fs.mkdirSync(p, o),
  mkdtempSync: (prefix) => fs.mkdtempSync(prefix),
  rmSync: (p, o) => fs.rmSync(p, o),
  appendFileSync: (p, data) => fs.appendFileSync(p, data),
  fsyncSync(p) {
    const fd = fs.openSync(p, 'r+');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  },
  openSync: (p, flags) => fs.openSync(p, flags),
  readSync: (fd, buffer, offset, length, position) => fs.readSync(fd, buffer, offset, length, position),
  closeSync: (fd) => fs.closeSync(fd),
};
export const defaultStorage = nodeStorage;
