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
  private cachedDoubleNormal = false;

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
    this.cachedDoubleNormal = false;
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

  /** Advances past what `uniform_` (kaiming_uniform_, nn.Linear's init) draws for `n` float32 values. */
  skipUniform(n: number): void {
    for (let i = 0; i < n; i++) this.random();
  }

  /** Advances past what `normal_` / `randn` draws for a contiguous float32 tensor of `n` values. */
  skipNormal(n: number): void {
    if (n >= 16) {
      this.skipUniform(n + (n % 16 ? 16 : 0));
      return;
    }
    // Below 16 values ATen draws serially through normal_distribution<double>: two 64-bit uniforms
    // (4 draws) per Box-Muller pair, the second sample cached in the generator.
    for (let i = 0; i < n; i++) {
      if (this.cachedDoubleNormal) this.cachedDoubleNormal = false;
      else {
        this.skipUniform(4);
        this.cachedDoubleNormal = true;
      }
    }
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
