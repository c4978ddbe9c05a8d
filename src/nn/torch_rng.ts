// PyTorch's CPU default generator, as far as replaying a stream needs it: torch.manual_seed(s) seeds
// a standard MT19937 with s (low 32 bits); a float32 uniform_/bernoulli_ element takes one 32-bit
// draw and uses its low 24 bits (x = (v & 0xffffff) / 2^24); normal_ on a contiguous float32 tensor
// of 16 or more elements fills it with such uniforms and then takes 16 more for the last 16 when
// the size is not a multiple of 16 (ATen's normal_fill). That is what lets `addWeightedAdapter`
// reproduce peft's DARE masks from the seed torch.manual_seed got before add_weighted_adapter.

/** MT19937 exactly as std::mt19937 / at::mt19937 (the generator behind torch.manual_seed on CPU). */
export class TorchCpuGenerator {
  private readonly state = new Uint32Array(624);
  private index = 624;
  /** torch caches the second Box-Muller sample of a double normal; reset by manual_seed */
  private cachedDoubleNormal: number | null = null;

  constructor(seed: number) {
    this.manualSeed(seed);
  }

  /** torch.manual_seed(seed) (seeds are taken modulo 2^32, as at::mt19937 does). */
  manualSeed(seed: number): void {
    if (!Number.isInteger(seed) || seed < 0) throw new RangeError(`a torch seed is a non-negative integer, got ${seed}`);
    const s = this.state;
    s[0] = seed % 4294967296;
    for (let j = 1; j < 624; j++) {
      const p = s[j - 1]! ^ (s[j - 1]! >>> 30);
      s[j] = (Math.imul(1812433253, p) + j) >>> 0;
    }
    this.index = 624;
    this.cachedDoubleNormal = null;
  }

  /** One 32-bit draw (CPUGeneratorImpl::random). */
  random(): number {
    if (this.index >= 624) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** A float32 uniform in [0, 1) as at::uniform_real_distribution<float> makes it. */
  uniform(): number {
    return (this.random() & 0xffffff) / 16777216;
  }

  /** torch.bernoulli(torch.full_like(t, p)) for one float32 element: 1 with probability p. */
  bernoulli(p: number): boolean {
    return this.uniform() < Math.fround(p);
  }

  /**
   * `torch.empty(n).uniform_(from, to, generator=g)` in float32: x · (to − from) + from per value,
   * rounded once (ATen's vectorised CPU build contracts it into a fused multiply-add; the float
   * product is exact in a double, so one rounding of the double sum is that FMA).
   */
  uniformTensor(n: number, from: number, to: number): Float32Array {
    const f = Math.fround;
    const lo = f(from);
    const span = f(f(to) - lo);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniform() * span + lo;
    return out;
  }

  /** Advances past what `uniform_` (kaiming_uniform_, nn.Linear's init) draws for `n` float32 values. */
  skipUniform(n: number): void {
    for (let i = 0; i < n; i++) this.random();
  }

  /** Advances past what `normal_` / `randn` draws for a contiguous float32 tensor of `n` values. */
  skipNormal(n: number): void {
    if (n >= 16) this.skipUniform(n + (n % 16 ? 16 : 0));
    else this.normal(n, 0, 1);
  }

  /** A 64-bit draw as a double uniform in [0, 1) (random64: the first 32-bit draw is the high word; 53 bits kept). */
  private uniformDouble(): number {
    const hi = this.random();
    const lo = this.random();
    return ((hi & 0x1fffff) * 4294967296 + lo) / 9007199254740992;
  }

  /**
   * `torch.empty(n).normal_(mean, std, generator=g)` (and randn) on a contiguous float32 tensor, to
   * float32 rounding of the transcendental functions (ATen's vectorised log/sin/cos may differ from
   * correctly rounded ones by an ulp or two): 16 or more values are filled with float uniforms and
   * turned into normals 16 at a time by Box-Muller (u1 = 1 - x[j], u2 = x[j + 8]), the last 16
   * redrawn when n is not a multiple of 16; fewer go one by one through normal_distribution<double>,
   * whose second Box-Muller sample the generator caches.
   */
  normal(n: number, mean: number, std: number): Float32Array {
    const out = new Float32Array(n);
    const f = Math.fround;
    if (n >= 16) {
      for (let i = 0; i < n; i++) out[i] = this.uniform();
      const fill16 = (at: number) => {
        for (let j = 0; j < 8; j++) {
          const u1 = f(1 - out[at + j]!);
          const u2 = out[at + j + 8]!;
          const radius = f(Math.sqrt(f(-2 * f(Math.log(u1)))));
          const theta = f(2 * Math.PI * u2);
          out[at + j] = f(f(radius * f(Math.cos(theta))) * f(std)) + f(mean);
          out[at + j + 8] = f(f(radius * f(Math.sin(theta))) * f(std)) + f(mean);
        }
      };
      for (let i = 0; i + 16 <= n; i += 16) fill16(i);
      if (n % 16) {
        for (let i = n - 16; i < n; i++) out[i] = this.uniform();
        fill16(n - 16);
      }
      return out;
    }
    for (let i = 0; i < n; i++) {
      let z: number;
      if (this.cachedDoubleNormal !== null) {
        z = this.cachedDoubleNormal;
        this.cachedDoubleNormal = null;
      } else {
        const u1 = this.uniformDouble();
        const u2 = this.uniformDouble();
        const r = Math.sqrt(-2 * Math.log1p(-u2));
        const theta = 2 * Math.PI * u1;
        this.cachedDoubleNormal = r * Math.sin(theta);
        z = r * Math.cos(theta);
      }
      out[i] = z * std + mean;
    }
    return out;
  }

  private twist(): void {
    const s = this.state;
    for (let k = 0; k < 624; k++) {
      const y = (s[k]! & 0x80000000) | (s[(k + 1) % 624]! & 0x7fffffff);
      s[k] = s[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }
}
