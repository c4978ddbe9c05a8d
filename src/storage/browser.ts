// The browser build's default storage (replaces ./node.ts there: scripts/build_browser.ts): an
// empty in-memory file tree the page fills with fetched or dropped files (memory.ts).

import { MemoryStorage } from './memory.js';

export const defaultStorage = new MemoryStorage();
