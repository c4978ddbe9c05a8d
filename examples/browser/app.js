// The demo page: collects the settings, hands files to the worker (dist-browser/worker.js, built
// from worker.ts), draws the loss as it comes, shows generations before and after, downloads the
// adapter and loads one back. window.peftDemo exposes the state for the browser test.

const $ = (id) => document.getElementById(id);
const state = { ready: false, backend: null, losses: [], result: null, adapter: null, errors: [], loaded: null, timings: {} };
window.peftDemo = state;
const t0 = performance.now();

const worker = new Worker('dist-browser/worker.js', { type: 'module' });
const waiting = new Map();
function request(type, body = {}, transfer = []) {
  return new Promise((resolve, reject) => {
    waiting.set(type, { resolve, reject });
    worker.postMessage({ type, ...body }, transfer);
  });
}
const answers = { ready: 'init', 'files-added': 'files', done: 'train', 'adapter-loaded': 'load-adapter' };
worker.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'status') return setStatus(m.text);
  if (m.type === 'step') return onStep(m.record, m.total);
  const key = m.type === 'error' ? m.request : answers[m.type];
  const w = waiting.get(key);
  waiting.delete(key);
  if (m.type === 'error') {
    state.errors.push(m.message);
    setStatus(`error: ${m.message}`, true);
    w?.reject(new Error(m.message));
  } else w?.resolve(m);
};
worker.onerror = (e) => {
  state.errors.push(e.message);
  setStatus(`worker error: ${e.message}`, true);
};

function setStatus(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

// ---- the bundled model and tasks (the server lists them in manifest.json) ----
let manifest;
let droppedModel = null; // [{path, file}]
async function fetchFiles(base, names) {
  return Promise.all(
    names.map(async (n) => {
      const r = await fetch(`${base}/${n}`);
      if (!r.ok) throw new Error(`${base}/${n}: HTTP ${r.status}`);
      return { name: n, data: await r.arrayBuffer() };
    }),
  );
}
const modelSent = new Set();
async function ensureModel() {
  if ($('modelDrop') && document.querySelector('input[name=model]:checked').value === 'dropped') {
    if (!droppedModel) throw new Error('drop a model folder first (or pick the bundled tiny Llama)');
    if (!modelSent.has('dropped')) {
      await request('files', { files: droppedModel.map((f) => ({ path: `/models/dropped/${f.name}`, data: f.file })) });
      modelSent.add('dropped');
    }
    return '/models/dropped';
  }
  if (!modelSent.has('bundled')) {
    const files = await fetchFiles('models/tiny-llama', manifest.model);
    await request(
      'files',
      { files: files.map((f) => ({ path: `/models/tiny-llama/${f.name}`, data: f.data })) },
      files.map((f) => f.data),
    );
    modelSent.add('bundled');
  }
  return '/models/tiny-llama';
}
async function dataText() {
  if ($('useOwn').checked) {
    const text = $('ownData').value.trim();
    if (!text) throw new Error('paste jsonl rows or choose a file, or untick "my jsonl"');
    return text;
  }
  const r = await fetch(`data/tasks/${$('task').value}/train.jsonl`);
  return r.text();
}
async function defaultPrompts() {
  const r = await fetch(`data/tasks/${$('task').value}/eval.jsonl`);
  const rows = (await r.text())
    .split('\n')
    .filter(Boolean)
    .slice(0, 3)
    .map((l) => JSON.parse(l));
  $('prompts').value = rows.map((x) => (x.prompt ?? '').replace(/\n/g, '\\n')).join('\n');
}

// ---- the chart ----
function draw() {
  const c = $('chart');
  const g = c.getContext('2d');
  const W = c.width,
    H = c.height,
    L = 44,
    B = 22;
  g.clearRect(0, 0, W, H);
  g.fillStyle = '#38405a';
  g.font = '11px system-ui';
  g.fillText('training loss', L, 12);
  const ys = state.losses;
  if (!ys.length) return;
  const total = Math.max(state.total ?? ys.length, 2);
  const lo = Math.min(...ys),
    hi = Math.max(...ys);
  const span = hi - lo || 1;
  const x = (i) => L + ((W - L - 8) * i) / (total - 1);
  const y = (v) => 18 + (H - B - 18) * (1 - (v - lo) / span);
  g.strokeStyle = '#d5dae5';
  g.beginPath();
  g.moveTo(L, 18);
  g.lineTo(L, H - B);
  g.lineTo(W - 8, H - B);
  g.stroke();
  g.fillText(hi.toFixed(3), 2, 22);
  g.fillText(lo.toFixed(3), 2, H - B);
  g.fillText('step 1', L, H - 6);
  g.fillText(`${total}`, W - 24, H - 6);
  g.strokeStyle = '#3c64d8';
  g.lineWidth = 2;
  g.beginPath();
  ys.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.stroke();
}
function onStep(r, total) {
  state.losses.push(r.loss);
  state.total = total;
  $('progress').max = total;
  $('progress').value = r.step;
  setStatus(
    `step ${r.step}/${total} | loss ${r.loss.toFixed(4)} | grad norm ${r.grad_norm.toFixed(3)} | ${Math.round(r.tokens_per_second)} tokens/s`,
  );
  draw();
}

function showGenerations(prompts, before, after) {
  const body = $('gens').querySelector('tbody');
  body.innerHTML = '';
  prompts.forEach((p, i) => {
    const tr = document.createElement('tr');
    for (const [text, cls] of [
      [p, ''],
      [before[i] ?? '', 'gen'],
      [after[i] ?? '', 'gen'],
    ]) {
      const td = document.createElement('td');
      td.textContent = text;
      td.className = cls;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  });
}

// ---- actions ----
async function train() {
  $('train').disabled = true;
  $('download').disabled = true;
  state.losses = [];
  state.result = null;
  draw();
  try {
    const modelDir = await ensureModel();
    await request('files', { files: [{ path: '/data/train.jsonl', data: await dataText() }] });
    const prompts = promptLines();
    const options = {
      modelDir,
      trainFile: '/data/train.jsonl',
      // kept in the Origin Private File System when the browser has one (survives a reload)
      outputDir: state.backend.opfs ? '/opfs/adapter' : '/out/adapter',
      method: $('method').value,
      steps: Number($('steps').value),
      learningRate: Number($('lr').value),
      batchSize: Number($('batch').value),
      r: Number($('rank').value),
      seed: Number($('seed').value),
      maxExamples: Number($('maxExamples').value),
      prompts,
      maxNewTokens: 12,
    };
    state.options = options;
    const start = performance.now();
    const m = await request('train', { options });
    state.result = m.result;
    state.adapter = m.adapter;
    state.timings.trainWall = (performance.now() - start) / 1000;
    showGenerations(prompts, m.result.before, m.result.after);
    setStatus(
      `done: ${m.result.records.length} steps, loss ${m.result.firstLoss.toFixed(4)} → ${m.result.finalLoss.toFixed(4)}, ${Math.round(m.result.tokensPerSecond)} tokens/s (${m.result.trainableParameters.toLocaleString('en-US')} trainable parameters)`,
    );
    $('download').disabled = false;
    if (m.savedAdapter) {
      $('loadSaved').disabled = false;
      $('saved').textContent = 'adapter saved in this browser (Origin Private File System): it is still there after a reload';
    }
  } catch (e) {
    setStatus(`error: ${e.message}`, true);
  } finally {
    $('train').disabled = false;
  }
}

function save(name, data, type) {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
function download() {
  if (!state.adapter) return;
  save('adapter_config.json', state.adapter.config, 'application/json');
  save('adapter_model.safetensors', state.adapter.safetensors, 'application/octet-stream');
}

const promptLines = () =>
  $('prompts')
    .value.split('\n')
    .filter((l) => l.trim())
    .map((l) => l.replace(/\\n/g, '\n'));

async function loadAdapterFiles(files) {
  const byName = Object.fromEntries([...files].map((f) => [f.name, f]));
  const config = byName['adapter_config.json'];
  const weights = byName['adapter_model.safetensors'];
  if (!config || !weights) return setStatus('choose both adapter_config.json and adapter_model.safetensors', true);
  await loadAdapter('the adapter', { config: await config.text(), safetensors: weights });
}

/** Loads an adapter into the worker (`source`: the chosen files, or { from: 'opfs' } for the saved one) and shows its generations. */
async function loadAdapter(what, source) {
  try {
    const modelDir = await ensureModel();
    setStatus(`loading ${what}…`);
    const m = await request('load-adapter', { ...source, modelDir, prompts: promptLines(), maxNewTokens: 12 });
    state.loaded = m;
    $('loaded').textContent =
      `loaded a ${m.peftType} adapter: ` + m.generations.map((g, i) => `[${i + 1}] ${JSON.stringify(g)}`).join('  ');
    setStatus(`adapter loaded (${m.peftType})`);
  } catch (e) {
    setStatus(`error: ${e.message}`, true);
  }
}

// ---- start ----
async function start() {
  manifest = await (await fetch('manifest.json')).json();
  for (const t of manifest.tasks) $('task').add(new Option(t, t));
  if (manifest.tasks.includes('sentiment')) $('task').value = 'sentiment';
  await defaultPrompts();
  const params = new URLSearchParams(location.search);
  const info = await request('init', {
    wasmPaths: new URL('dist-browser/', location.href).href,
    threads: Number(params.get('threads') ?? 4),
    webgpu: params.get('webgpu') !== '0',
  });
  state.backend = info;
  $('backend').textContent =
    `${info.runtime}, ${info.provider === 'webgpu' ? 'WebGPU' : 'WebAssembly'}${info.provider === 'wasm' ? (info.threads > 1 ? ` with ${info.threads} threads` : ' single-threaded') : ''}${info.crossOriginIsolated ? '' : ' (page not cross-origin isolated)'}`;
  state.timings.ready = (performance.now() - t0) / 1000;
  state.ready = true;
  $('train').disabled = false;
  $('loadAdapter').disabled = false;
  if (info.savedAdapter) {
    $('loadSaved').disabled = false;
    $('saved').textContent = 'an adapter trained earlier is saved in this browser (Origin Private File System)';
  }
}

$('train').onclick = train;
$('download').onclick = download;
$('task').onchange = defaultPrompts;
$('loadAdapter').onclick = () => $('adapterFiles').click();
$('adapterFiles').onchange = (e) => loadAdapterFiles(e.target.files);
$('loadSaved').onclick = () => loadAdapter('the saved adapter', { from: 'opfs' });
$('dataFile').onchange = async (e) => {
  $('ownData').value = await e.target.files[0].text();
  $('useOwn').checked = true;
};
function takeModel(list) {
  droppedModel = list.map((file) => ({ name: file.name, file }));
  modelSent.delete('dropped');
  document.querySelector('input[name=model][value=dropped]').checked = true;
  $('modelInfo').textContent = `${list.length} files: ${list.map((f) => f.name).join(', ')}`;
}
$('modelFiles').onchange = (e) => takeModel([...e.target.files]);
const drop = $('modelDrop');
drop.ondragover = (e) => {
  e.preventDefault();
  drop.classList.add('over');
};
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) out.push(await new Promise((res, rej) => entry.file(res, rej)));
    else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const c of batch) await walk(c);
      }
    }
  };
  for (const item of e.dataTransfer.items) {
    const entry = item.webkitGetAsEntry?.();
    if (entry) await walk(entry);
  }
  takeModel(out);
};
start().catch((e) => {
  state.errors.push(e.message);
  setStatus(`error: ${e.message}`, true);
});
