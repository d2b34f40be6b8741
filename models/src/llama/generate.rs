//! Text generation over any decoder that gives the logits of its last position
//! ([`CausalLm`]): prefill the prompt, then decode one token at a time, greedy or sampled,
//! until a stop id or a token budget; tokens are handed to a callback as they come.

use std::time::{Duration, Instant};

use aihal_core::{CoreError, Result};

use super::model::{LlamaModel, LlamaState};

/// A decoder generation can drive: runs token ids after what its state holds and returns
/// the logits of the last one.
pub trait CausalLm {
    /// The positions seen so far (KV caches).
    type State;

    /// A fresh state for up to `max_len` positions (the context length when `None`).
    fn new_state(&self, max_len: Option<usize>) -> Result<Self::State>;

    /// Runs `ids` after what `state` holds, appends them, and returns the last position's
    /// logits (`vocab_size` values).
    fn forward(&self, ids: &[u32], state: &mut Self::State) -> Result<Vec<f32>>;

    /// Positions `state` holds so far.
    fn position(&self, state: &Self::State) -> usize;

    /// The most positions `state` holds.
    fn max_len(&self, state: &Self::State) -> usize;

    /// Tokens in the vocabulary.
    fn vocab_size(&self) -> usize;

    /// Positions the model was trained for.
    fn context_length(&self) -> usize;
}

impl CausalLm for LlamaModel {
    type State = LlamaState;

    fn new_state(&self, max_len: Option<usize>) -> Result<LlamaState> {
        LlamaModel::new_state(self, max_len)
    }

    fn forward(&self, ids: &[u32], state: &mut LlamaState) -> Result<Vec<f32>> {
        LlamaModel::forward(self, ids, state)
    }

    fn position(&self, state: &LlamaState) -> usize {
        state.position()
    }

    fn max_len(&self, state: &LlamaState) -> usize {
        state.max_len()
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn context_length(&self) -> usize {
        self.config().context_length
    }
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): a 64-bit counter advanced by the golden-ratio increment, then mixed. Small,
/// fast, and the same sequence on every platform, so a seed reproduces a sampled generation.
/// Not for cryptography.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How the next token is chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    /// 0 for greedy decoding (the highest logit, the lowest id on a tie: reproducible);
    /// above 0, the logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the fewest most likely tokens whose probabilities sum to at least `top_p`
    /// (nucleus sampling; 1: all).
    pub top_p: f32,
    /// The seed of the [`SplitMix64`] the draws come from.
    pub seed: u64,
}

impl Default for SamplingOptions {
    /// Greedy.
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingOptions {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Checks the values.
    ///
    /// Errors: `InvalidConfig` for a temperature that is not finite and >= 0, or a `top_p`
    /// outside `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(CoreError::invalid_config(format!(
                "sampling: the temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(CoreError::invalid_config(format!(
                "sampling: top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Chooses tokens from logits as [`SamplingOptions`] say, reusing its buffers between
/// calls.
#[derive(Clone, Debug)]
pub struct Sampler {
    options: SamplingOptions,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler; its generator starts at `options.seed`.
    ///
    /// Errors: those of [`SamplingOptions::validate`].
    pub fn new(options: SamplingOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self {
            rng: SplitMix64::new(options.seed),
            options,
            candidates: Vec::new(),
        })
    }

    /// The options.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// The next token for `logits`.
    ///
    /// Errors: `InvalidInput` for empty logits or a NaN among them.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(CoreError::invalid_input("sampling: no logits"));
        }
        let Some(top) = max_unless_nan(logits) else {
            let i = logits.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(CoreError::invalid_input(format!("sampling: logit {i} is NaN")));
        };
        let o = self.options;
        if o.temperature == 0.0 {
            return Ok(first_index_of(logits, top));
        }
        // Candidates: (id, logit / temperature), the most likely first.
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &v)| (i as u32, v / o.temperature)));
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if o.top_k > 0 && o.top_k < c.len() {
            c.select_nth_unstable_by(o.top_k - 1, by_logit);
            c.truncate(o.top_k);
        }
        c.sort_unstable_by(by_logit);
        // Softmax in f64 from the largest, then the nucleus.
        let max = f64::from(c[0].1);
        let mut total = 0.0f64;
        for e in c.iter_mut() {
            let p = (f64::from(e.1) - max).exp();
            total += p;
            e.1 = p as f32;
        }
        if o.top_p < 1.0 {
            let want = f64::from(o.top_p) * total;
            let mut sum = 0.0f64;
            let mut keep = c.len();
            for (i, e) in c.iter().enumerate() {
                sum += f64::from(e.1);
                if sum >= want {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
            total = c.iter().map(|e| f64::from(e.1)).sum();
        }
        let mut u = self.rng.next_f64() * total;
        for e in c.iter() {
            u -= f64::from(e.1);
            if u < 0.0 {
                return Ok(e.0);
            }
        }
        // Rounding left `u` at or just above 0: the least likely kept token.
        Ok(c.last().map_or(0, |e| e.0))
    }
}

/// The first index of a value equal to `top` in `v` (0 if none): `top` is one of `v`'s values,
/// so exact equality is meant (and `0.0 == -0.0`, as `>` cannot tell them apart either).
#[allow(clippy::float_cmp)]
fn first_index_of(v: &[f32], top: f32) -> u32 {
    v.iter().position(|&x| x == top).unwrap_or(0) as u32
}

/// The largest value of `v` (`-inf` when empty), `None` when one is NaN: one pass in 16
/// independent lanes, which the compiler vectorizes (a vocabulary of 262144 logits is read
/// once per generated token).
fn max_unless_nan(v: &[f32]) -> Option<f32> {
    const LANES: usize = 16;
    let mut top = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            nan[l] |= c[l].is_nan();
            top[l] = if c[l] > top[l] { c[l] } else { top[l] };
        }
    }
    let rest = chunks.remainder();
    if nan.contains(&true) || rest.iter().any(|x| x.is_nan()) {
        return None;
    }
    Some(
        top.iter()
            .chain(rest)
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m }),
    )
}

/// What a generation does.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// The most tokens to generate (the stop token not counted).
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingOptions,
    /// Ids that end the generation (EOS, end of turn); the stop id is neither handed to the
    /// callback nor counted among the generated tokens.
    pub stop: Vec<u32>,
    /// Positions the [`Generator`]'s state holds: the context length when `None`. A smaller
    /// value saves KV cache memory (`prompt + max_tokens` suffices for one generation).
    pub max_len: Option<usize>,
}

impl Default for GenerateOptions {
    /// 64 greedy tokens, no stop ids, the whole context.
    fn default() -> Self {
        Self {
            max_tokens: 64,
            sampling: SamplingOptions::greedy(),
            stop: Vec::new(),
            max_len: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop id was produced.
    Stop(u32),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The state is full (the context length or `max_len`).
    ContextFull,
}

/// The tokens of one generation, why it ended, and its timing.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The generated ids (without the stop id).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Prompt tokens run in the prefill.
    pub prompt_tokens: usize,
    /// Time of the prefill (the prompt's forward pass).
    pub prefill: Duration,
    /// Single-token forward passes after the prefill.
    pub decode_steps: usize,
    /// Time of the decode: those passes and every sampling step.
    pub decode: Duration,
}

impl Generation {
    /// Prompt tokens per second in the prefill.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill)
    }

    /// Decoded tokens per second (single-token passes and sampling).
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.decode_steps, self.decode)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// Generation over a [`CausalLm`], keeping its state between calls: a second
/// [`generate`](Self::generate) continues the same sequence (a chat's next turn).
pub struct Generator<'m, M: CausalLm> {
    model: &'m M,
    state: M::State,
    sampler: Sampler,
    options: GenerateOptions,
    /// The last token chosen, not yet run through the model.
    pending: Option<u32>,
}

impl<M: CausalLm> std::fmt::Debug for Generator<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("options", &self.options)
            .field("position", &self.model.position(&self.state))
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<'m, M: CausalLm> Generator<'m, M> {
    /// A generator over `model` with a fresh state of `options.max_len` positions.
    ///
    /// Errors: those of [`SamplingOptions::validate`] and the model's `new_state`.
    pub fn new(model: &'m M, options: GenerateOptions) -> Result<Self> {
        let sampler = Sampler::new(options.sampling)?;
        Ok(Self {
            state: model.new_state(options.max_len)?,
            model,
            sampler,
            options,
            pending: None,
        })
    }

    /// The options.
    pub fn options(&self) -> &GenerateOptions {
        &self.options
    }

    /// Positions the state holds (prompts and generated tokens run so far).
    pub fn position(&self) -> usize {
        self.model.position(&self.state)
    }

    /// Runs `prompt` (after the previous call's last token, if any), then generates until
    /// a stop id, `max_tokens`, or a full state, handing each token to `on_token` as it is
    /// chosen (an error from `on_token` ends the generation with that error).
    ///
    /// Errors: `InvalidInput` for an empty prompt (on the first call), a prompt longer than
    /// the room left in the state (naming both), an id outside the vocabulary; the model's
    /// and the sampler's errors.
    pub fn generate(&mut self, prompt: &[u32], mut on_token: impl FnMut(u32) -> Result<()>) -> Result<Generation> {
        let mut input = Vec::with_capacity(prompt.len() + 1);
        input.extend(self.pending);
        input.extend_from_slice(prompt);
        if input.is_empty() {
            return Err(CoreError::invalid_input("generate: the prompt is empty"));
        }
        let (pos, room) = (self.position(), self.model.max_len(&self.state));
        if pos + input.len() > room {
            return Err(CoreError::invalid_input(format!(
                "generate: a prompt of {} tokens after {pos} positions does not fit in {room} positions \
                 (the context length is {})",
                input.len(),
                self.model.context_length()
            )));
        }
        let start = Instant::now();
        let mut logits = self.model.forward(&input, &mut self.state)?;
        self.pending = None;
        let prefill = start.elapsed();

        let start = Instant::now();
        let mut tokens = Vec::with_capacity(self.options.max_tokens.min(4096));
        let mut decode_steps = 0;
        let stop = loop {
            if tokens.len() >= self.options.max_tokens {
                break StopReason::MaxTokens;
            }
            let id = self.sampler.sample(&logits)?;
            self.pending = Some(id);
            if self.options.stop.contains(&id) {
                break StopReason::Stop(id);
            }
            tokens.push(id);
            on_token(id)?;
            if tokens.len() >= self.options.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.position() >= self.model.max_len(&self.state) {
                break StopReason::ContextFull;
            }
            logits = self.model.forward(&[id], &mut self.state)?;
            self.pending = None;
            decode_steps += 1;
        };
        Ok(Generation {
            tokens,
            stop,
            prompt_tokens: input.len(),
            prefill,
            decode_steps,
            decode: start.elapsed(),
        })
    }
}

/// Generates from `prompt` with a fresh state: [`Generator::new`] then
/// [`Generator::generate`]. The state holds `options.max_len` positions, or, when that is
/// `None`, `prompt + max_tokens` (at most the context length).
///
/// Errors: those of both.
pub fn generate<M: CausalLm>(
    model: &M,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    let mut options = options.clone();
    if options.max_len.is_none() {
        let ctx = model.context_length();
        if prompt.len() > ctx {
            return Err(CoreError::invalid_input(format!(
                "generate: a prompt of {} tokens is longer than the context length {ctx}",
                prompt.len()
            )));
        }
        options.max_len = Some(prompt.len().saturating_add(options.max_tokens).clamp(1, ctx));
    }
    Generator::new(model, options)?.generate(prompt, on_token)
}

#[cfg(test)]
mod tests {
    use super::{Sampler, SamplingOptions, SplitMix64};

    /// The index of the largest value, the first on a tie, one value at a time.
    fn plain_argmax(v: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &x) in v.iter().enumerate().skip(1) {
            if x > v[best] {
                best = i;
            }
        }
        best as u32
    }

    /// Greedy sampling picks the first index of the largest logit at every length (whole lane
    /// groups and a remainder), with ties in and across lanes, signed zeros and infinities,
    /// and names the first NaN.
    #[test]
    fn greedy_picks_the_first_largest_logit_and_refuses_nan() {
        let mut greedy = Sampler::new(SamplingOptions::greedy()).unwrap();
        let mut rng = SplitMix64::new(9);
        for len in [1, 2, 15, 16, 17, 31, 32, 33, 100, 262_144] {
            for case in 0..6 {
                // Few distinct values, so the largest is often tied.
                let mut v: Vec<f32> = (0..len).map(|_| (rng.next_f64() * 8.0).floor() as f32 - 4.0).collect();
                match case {
                    1 => v.iter_mut().for_each(|x| *x = f32::NEG_INFINITY),
                    2 => v.iter_mut().for_each(|x| *x = if *x > 0.0 { -0.0 } else { 0.0 }),
                    3 => v[len - 1] = f32::INFINITY,
                    4 => v[len / 2] = 1e30,
                    _ => {}
                }
                assert_eq!(
                    greedy.sample(&v).unwrap(),
                    plain_argmax(&v),
                    "length {len}, case {case}"
                );
            }
            let mut v = vec![1.0f32; len];
            v[len - 1] = f32::NAN;
            let e = greedy.sample(&v).unwrap_err().to_string();
            assert!(e.contains(&format!("logit {} is NaN", len - 1)), "{e}");
        }
        assert!(greedy.sample(&[]).is_err());
    }
}
