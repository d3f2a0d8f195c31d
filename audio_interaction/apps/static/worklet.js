// AudioWorklet: microphone blocks at the context's rate -> 16 kHz mono s16le PCM.
// A windowed-sinc low-pass (cut at 0.45 x 16 kHz) then fractional resampling by
// linear interpolation; posts ~20 ms Int16Array pieces to the page.
class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = (options.processorOptions && options.processorOptions.targetRate) || 16000;
    this.step = sampleRate / target;            // input samples per output sample
    this.pos = 0;                               // position of the next output in `hist` time
    this.taps = this.step > 1.0001 ? makeLowPass(0.45 * target / sampleRate, 63) : null;
    this.hist = new Float32Array(this.taps ? this.taps.length : 1);
    this.filtered = [];                         // filtered input not yet consumed
    this.piece = Math.round(target / 50);      // samples per message (20 ms)
    this.out = new Int16Array(this.piece);
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length, n = input[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      x /= channels;
      if (this.taps) {
        this.hist.copyWithin(0, 1);
        this.hist[this.hist.length - 1] = x;
        let y = 0;
        for (let k = 0; k < this.taps.length; k++) y += this.taps[k] * this.hist[k];
        x = y;
      }
      this.filtered.push(x);
    }
    // Outputs at input positions pos, pos + step, ... (linear interpolation).
    const f = this.filtered;
    while (this.pos + 1 < f.length) {
      const i = Math.floor(this.pos), frac = this.pos - i;
      const y = f[i] * (1 - frac) + f[i + 1] * frac;
      this.out[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(y * 32767)));
      if (this.fill === this.out.length) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]);
        this.out = new Int16Array(this.piece);  // the sent buffer was transferred
        this.fill = 0;
      }
      this.pos += this.step;
    }
    const used = Math.floor(this.pos);
    this.filtered = f.slice(used);
    this.pos -= used;
    return true;
  }
}

function makeLowPass(cutoff, length) {  // cutoff as a fraction of the input rate
  const taps = new Float32Array(length), mid = (length - 1) / 2;
  let sum = 0;
  for (let k = 0; k < length; k++) {
    const t = k - mid;
    const sinc = t === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * t) / (Math.PI * t);
    const window = 0.42 - 0.5 * Math.cos(2 * Math.PI * k / (length - 1))
                 + 0.08 * Math.cos(4 * Math.PI * k / (length - 1));  // Blackman
    taps[k] = sinc * window;
    sum += taps[k];
  }
  for (let k = 0; k < length; k++) taps[k] /= sum;
  return taps;
}

registerProcessor('pcm-16k', Pcm16kProcessor);
