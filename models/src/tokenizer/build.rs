//! [`GgufTokenizer`]: a `tokenizers::Tokenizer` assembled from the `tokenizer.ggml.*`
//! metadata of a GGUF file.
//!
//! Facts about the metadata and its meaning come from llama.cpp's `src/llama-vocab.cpp`
//! (the copy vendored in llama-cpp-python 0.3.36), cited below as "llama-vocab.cpp".

use std::collections::HashSet;

use aihal_core::{CoreError, Result};
use aihal_quantize::gguf::GgufArray;
use aihal_quantize::{GgufFile, GgufValue};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use super::stream::TokenStream;

/// `tokenizer.ggml.token_type` values (llama-vocab.cpp, `LLAMA_TOKEN_TYPE_*` as mapped to
/// attributes when the vocabulary loads).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// The SentencePiece whitespace marker (U+2581), which replaces every space before a
/// SentencePiece vocabulary is searched (llama-vocab.cpp, `llama_escape_whitespace`).
const SPM_SPACE: &str = "\u{2581}";

/// Token texts that end a generation when they are in the vocabulary: a subset of the list
/// llama-vocab.cpp marks as end-of-generation (`special_eog_ids`) while loading.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
];

/// The GPT-2 pre-tokenizer expression, as llama-vocab.cpp lists it in `llm_tokenizer_bpe`
/// (the text between two matches becomes a piece of its own there, and here through
/// [`SplitDelimiterBehavior::Isolated`], so the `|\s+` tail of the original GPT-2 pattern is
/// not needed).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The Llama 3 expression (llama-vocab.cpp, `LLAMA_VOCAB_PRE_TYPE_LLAMA3`, the case-insensitive
/// contractions spelled out as llama.cpp adapted them).
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Qwen 2 expression (llama-vocab.cpp, `LLAMA_VOCAB_PRE_TYPE_QWEN2`): Llama 3's with
/// single digits.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a byte-level BPE vocabulary splits text before BPE, by its `tokenizer.ggml.pre` name.
struct PreTokenizerSpec {
    /// Expressions applied one after the other; each splits every piece the previous ones
    /// left into matches and the text between them.
    regexes: &'static [&'static str],
    /// A piece that is a whole vocabulary entry is taken as is, without merges.
    ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the file does not say.
    add_bos: bool,
}

/// The pre-tokenizer a `tokenizer.ggml.pre` name stands for, from the name tests and the
/// `regex_exprs` of `llm_tokenizer_bpe` in llama-vocab.cpp. Only the families below are
/// known here; SmolLM2's `"smollm"` is checked against llama.cpp's ids by the tests.
fn pre_tokenizer_spec(pre: Option<&str>) -> Result<PreTokenizerSpec> {
    let spec = |regexes, ignore_merges, add_bos| PreTokenizerSpec {
        regexes,
        ignore_merges,
        add_bos,
    };
    Ok(match pre {
        // A missing name means "default" (llama-vocab.cpp warns and degrades to it).
        None | Some("default") => spec(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
            false,
        ),
        Some("gpt-2" | "phi-2" | "mpt" | "olmo" | "roberta-bpe" | "exaone4") => spec(&[GPT2_REGEX], false, false),
        Some("smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b") => {
            spec(&[r"\p{N}", GPT2_REGEX], false, false)
        }
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3") => spec(&[LLAMA3_REGEX], true, true),
        Some("dbrx" | "smaug-bpe") => spec(&[LLAMA3_REGEX], false, false),
        Some("qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez") => spec(&[QWEN2_REGEX], false, false),
        Some(other) => {
            return Err(CoreError::unsupported(
                "GGUF tokenizer",
                format!("tokenizer.ggml.pre {other:?} (known here: default, gpt-2, smollm, starcoder, llama-bpe, qwen2 and their aliases)"),
            ))
        }
    })
}

/// A tokenizer built from the `tokenizer.ggml.*` metadata of a GGUF file.
///
/// It wraps a [`tokenizers::Tokenizer`] ([`inner`](Self::inner)) and adds what the file
/// says about special tokens: the BOS/EOS ids and whether [`encode`](Self::encode) adds
/// them, and the ids that end a generation ([`stop_ids`](Self::stop_ids)).
///
/// Control tokens (`token_type` 3) and unknown-type tokens (2) are special tokens: text that
/// spells one is encoded as that single token, and `decode(.., true)` drops them.
/// User-defined tokens (4) are matched whole in text too but decode as text.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    inner: Tokenizer,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    stop_ids: Vec<u32>,
}

impl GgufTokenizer {
    /// Built from the `tokenizer.ggml.*` metadata of a GGUF file (model "gpt2": byte-level BPE;
    /// model "llama": SentencePiece-style; others: CoreError::Unsupported naming the model).
    ///
    /// - `"gpt2"`: a BPE model over `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`, the
    ///   pre-tokenizer expressions that `tokenizer.ggml.pre` names, the GPT-2 byte mapping.
    /// - `"llama"`: SentencePiece BPE, which llama.cpp runs by repeatedly merging the adjacent
    ///   pair whose concatenation is the vocabulary entry of highest `tokenizer.ggml.scores`
    ///   (leftmost first on ties), then spelling pieces that are not entries as `<0xNN>` byte
    ///   tokens (llama-vocab.cpp, `llm_tokenizer_spm_session`). The same result comes from a
    ///   `tokenizers` BPE model whose merges are every split of every entry into two entries,
    ///   ranked by the entry's score, with byte fallback. Spaces become `▁`, and a `▁` is put
    ///   in front of the text when `tokenizer.ggml.add_space_prefix` says so (llama.cpp's
    ///   default for this model: yes).
    ///
    /// Errors: `InvalidInput` for missing or malformed keys (no token list, a merge naming a
    /// token that is not in the list, an out-of-range special token id, ...).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = match file.get("tokenizer.ggml.model") {
            Some(v) => v
                .as_str()
                .ok_or_else(|| invalid(format!("tokenizer.ggml.model is {v:?}, not a string")))?,
            None => return Err(invalid("the file has no tokenizer.ggml.model key, so no tokenizer")),
        };
        let is_spm = match model {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(CoreError::unsupported(
                    "GGUF tokenizer",
                    format!("tokenizer.ggml.model {other:?} (supported: \"gpt2\" and \"llama\")"),
                ))
            }
        };

        let tokens = read_tokens(file)?;
        let n = tokens.len();
        let types = read_token_types(file, n)?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        if vocab.len() != n {
            let mut seen = HashSet::new();
            let dup = tokens.iter().position(|t| !seen.insert(t.as_str())).unwrap_or(0);
            return Err(invalid(format!(
                "tokenizer.ggml.tokens: token {dup} ({:?}) appears twice",
                tokens[dup]
            )));
        }

        // Defaults when the file does not say, from llama-vocab.cpp (`load`): "llama" has
        // BOS 1 and EOS 2 and adds BOS; "gpt2" has BOS = EOS = 11 and adds neither, except
        // where the pre-tokenizer says otherwise (Llama 3 adds BOS).
        let (mut inner, default_ids, default_add_bos) = if is_spm {
            (build_spm(file, &tokens, vocab)?, (Some(1), Some(2)), true)
        } else {
            let pre = match file.get("tokenizer.ggml.pre") {
                None => None,
                Some(v) => Some(
                    v.as_str()
                        .ok_or_else(|| invalid(format!("tokenizer.ggml.pre is {v:?}, not a string")))?,
                ),
            };
            let spec = pre_tokenizer_spec(pre)?;
            (build_bpe(file, vocab, &spec)?, (Some(11), Some(11)), spec.add_bos)
        };
        add_special_tokens(&mut inner, &tokens, &types)?;

        let bos = special_id(file, "tokenizer.ggml.bos_token_id", default_ids.0, n)?;
        let eos = special_id(file, "tokenizer.ggml.eos_token_id", default_ids.1, n)?;
        let add_bos = read_bool(file, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = read_bool(file, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(invalid(
                "tokenizer.ggml.add_bos_token is true but the file has no BOS token",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(invalid(
                "tokenizer.ggml.add_eos_token is true but the file has no EOS token",
            ));
        }

        let mut stop_ids = Vec::new();
        stop_ids.extend(eos);
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop_ids.extend(special_id(file, key, None, n)?);
        }
        stop_ids.extend(END_OF_TURN_TEXTS.iter().filter_map(|t| inner.token_to_id(t)));
        let mut seen = HashSet::new();
        stop_ids.retain(|id| seen.insert(*id));

        Ok(Self {
            inner,
            vocab_size: n,
            bos,
            eos,
            add_bos,
            add_eos,
            stop_ids,
        })
    }

    /// Token ids of `text`; `add_special` adds BOS/EOS as the file's add_bos_token/add_eos_token say.
    ///
    /// Special tokens written in `text` (`<|im_start|>`, `<end_of_turn>`, ...) are encoded as
    /// those tokens, as llama.cpp does when it parses special tokens (`llama-tokenize`'s
    /// default).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| invalid(format!("tokenizing {} bytes of text: {e}", text.len())))?;
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The text of `ids`; `skip_special` leaves out special (control) tokens such as BOS.
    /// An id outside the vocabulary is an `InvalidInput` error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| invalid(format!("decoding {} token ids: {e}", ids.len())))
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Ids that end a generation: EOS and end-of-turn tokens (e.g. `<|im_end|>`, `<end_of_turn>`).
    ///
    /// EOS, `tokenizer.ggml.eot_token_id` and `eom_token_id` when present, then the tokens
    /// spelled `<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `<|eom_id|>`, `<|end|>`,
    /// `<|endoftext|>`, `<|end_of_text|>` or `<EOT>` that the vocabulary has (llama.cpp
    /// treats these texts as end of generation too); each id once.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Whether [`encode`](Self::encode) with `add_special` puts BOS in front.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`encode`](Self::encode) with `add_special` appends EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// The number of tokens in `tokenizer.ggml.tokens`; every valid id is below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The text of one token as stored in the vocabulary (byte-level or `▁` form, not
    /// decoded), or `None` for an id outside it.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Incremental detokenizer for streaming: feed ids one at a time, get the text they complete.
    ///
    /// Special tokens are left out, as in `decode(ids, true)`; see
    /// [`stream_with`](Self::stream_with) to keep them.
    pub fn stream(&self) -> TokenStream<'_> {
        self.stream_with(true)
    }

    /// [`stream`](Self::stream), choosing whether special tokens are left out.
    pub fn stream_with(&self, skip_special: bool) -> TokenStream<'_> {
        TokenStream::new(self, skip_special)
    }

    /// The underlying `tokenizers` tokenizer (BOS/EOS are added by [`encode`](Self::encode),
    /// not by it).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// `InvalidInput` naming the first id outside the vocabulary.
    pub(super) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().position(|&id| id as usize >= self.vocab_size) {
            Some(i) => Err(invalid(format!(
                "token id {} (at position {i}) is outside the vocabulary of {} tokens",
                ids[i], self.vocab_size
            ))),
            None => Ok(()),
        }
    }
}

fn invalid(message: impl Into<String>) -> CoreError {
    CoreError::invalid_input(format!("GGUF tokenizer: {}", message.into()))
}

/// `tokenizer.ggml.tokens`, with llama-vocab.cpp's treatment of empty entries (each is
/// renamed `[EMPTY_<id>]` so the list stays one text per id).
fn read_tokens(file: &GgufFile) -> Result<Vec<String>> {
    let tokens = match file.get("tokenizer.ggml.tokens") {
        None => return Err(invalid("the file has no tokenizer.ggml.tokens (the token list)")),
        Some(GgufValue::Array(GgufArray::String(t))) => t,
        Some(other) => {
            return Err(invalid(format!(
                "tokenizer.ggml.tokens is a {:?}, not an array of strings",
                other.value_type()
            )))
        }
    };
    if tokens.is_empty() {
        return Err(invalid("tokenizer.ggml.tokens is empty"));
    }
    if u32::try_from(tokens.len()).is_err() {
        return Err(invalid(format!("{} tokens do not fit u32 ids", tokens.len())));
    }
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect())
}

/// An integer array of at least `n` entries as `i64`, or `None` when `key` is absent.
fn read_int_array(file: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<i64>>> {
    let Some(value) = file.get(key) else { return Ok(None) };
    let values: Vec<i64> = match value {
        GgufValue::Array(GgufArray::I32(v)) => v.iter().map(|&x| x.into()).collect(),
        GgufValue::Array(GgufArray::U32(v)) => v.iter().map(|&x| x.into()).collect(),
        GgufValue::Array(GgufArray::I8(v)) => v.iter().map(|&x| x.into()).collect(),
        GgufValue::Array(GgufArray::U8(v)) => v.iter().map(|&x| x.into()).collect(),
        GgufValue::Array(GgufArray::I16(v)) => v.iter().map(|&x| x.into()).collect(),
        GgufValue::Array(GgufArray::U16(v)) => v.iter().map(|&x| x.into()).collect(),
        other => {
            return Err(invalid(format!(
                "{key} is a {:?}, not an array of integers",
                other.value_type()
            )))
        }
    };
    if values.len() < n {
        return Err(invalid(format!("{key} has {} entries for {n} tokens", values.len())));
    }
    Ok(Some(values))
}

/// `tokenizer.ggml.token_type`, all normal (1) when absent.
fn read_token_types(file: &GgufFile, n: usize) -> Result<Vec<i64>> {
    Ok(read_int_array(file, "tokenizer.ggml.token_type", n)?.unwrap_or_else(|| vec![1; n]))
}

fn read_bool(file: &GgufFile, key: &str) -> Result<Option<bool>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} is {v:?}, not a boolean"))),
    }
}

/// A special token id from `key`, else `default` if it is inside the vocabulary (llama-vocab.cpp
/// drops an out-of-range default). An id in the file outside the vocabulary is an error.
fn special_id(file: &GgufFile, key: &str, default: Option<u32>, n: usize) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(default.filter(|&id| (id as usize) < n)),
        Some(v) => match v.as_u64() {
            Some(id) if id < n as u64 => Ok(Some(id as u32)),
            _ => Err(invalid(format!(
                "{key} is {v:?}, not a token id below the vocabulary size {n}"
            ))),
        },
    }
}

/// Adds control and unknown-type tokens as special tokens and user-defined ones as plain
/// added tokens, all matched in the raw text before any other step: llama-vocab.cpp
/// (`tokenizer_st_partition`) cuts them out of the text first, user-defined ones always and
/// control ones when special tokens are parsed.
fn add_special_tokens(tokenizer: &mut Tokenizer, tokens: &[String], types: &[i64]) -> Result<()> {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (t, &ty) in tokens.iter().zip(types) {
        match ty {
            TYPE_CONTROL | TYPE_UNKNOWN => special.push(AddedToken::from(t.clone(), true).normalized(false)),
            TYPE_USER_DEFINED => user.push(AddedToken::from(t.clone(), false).normalized(false)),
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| invalid(format!("adding control tokens: {e}")))?;
    tokenizer
        .add_tokens(user)
        .map_err(|e| invalid(format!("adding user-defined tokens: {e}")))?;
    Ok(())
}

/// The byte-level BPE of a `"gpt2"` vocabulary.
fn build_bpe(file: &GgufFile, vocab: Vocab, spec: &PreTokenizerSpec) -> Result<Tokenizer> {
    let merges = match file.get("tokenizer.ggml.merges") {
        None => {
            return Err(invalid(
                "a \"gpt2\" tokenizer needs tokenizer.ggml.merges, and the file has none",
            ))
        }
        Some(GgufValue::Array(GgufArray::String(m))) => m,
        Some(other) => {
            return Err(invalid(format!(
                "tokenizer.ggml.merges is a {:?}, not an array of strings",
                other.value_type()
            )))
        }
    };
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        // Split at the first space after the first character (llama-vocab.cpp searches
        // from the second byte, so a merge may start with a space).
        let first = merge.chars().next().map_or(0, char::len_utf8);
        let at = merge[first..]
            .find(' ')
            .map(|p| p + first)
            .ok_or_else(|| invalid(format!("merge {i} ({merge:?}) is not two tokens separated by a space")))?;
        let (left, right) = (&merge[..at], &merge[at + 1..]);
        for part in [left, right] {
            if !vocab.contains_key(part) {
                return Err(invalid(format!(
                    "merge {i} ({merge:?}) names {part:?}, which is not a token"
                )));
            }
        }
        if !vocab.contains_key(format!("{left}{right}").as_str()) {
            let joined = format!("{left}{right}");
            return Err(invalid(format!(
                "merge {i} ({merge:?}) makes {joined:?}, which is not a token"
            )));
        }
        pairs.push((left.to_owned(), right.to_owned()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| invalid(format!("building the BPE model: {e}")))?;

    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for regex in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*regex).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| invalid(format!("pre-tokenizer expression {regex:?}: {e}")))?;
        pre.push(split.into());
    }
    // The regexes above did the splitting; ByteLevel only maps bytes to its alphabet.
    pre.push(ByteLevel::new(false, false, false).into());

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(pre)));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, false)));
    Ok(tokenizer)
}

/// The SentencePiece BPE of a `"llama"` vocabulary (see [`GgufTokenizer::from_gguf`]).
fn build_spm(file: &GgufFile, tokens: &[String], vocab: Vocab) -> Result<Tokenizer> {
    let n = tokens.len();
    let scores: Vec<f32> = match file.get("tokenizer.ggml.scores") {
        Some(GgufValue::Array(GgufArray::F32(s))) => s.clone(),
        Some(GgufValue::Array(GgufArray::I32(s))) => s.iter().map(|&x| x as f32).collect(),
        Some(other) => {
            return Err(invalid(format!(
                "tokenizer.ggml.scores is a {:?}, not an array of float32",
                other.value_type()
            )))
        }
        None => {
            return Err(invalid(
                "a \"llama\" (SentencePiece) tokenizer needs tokenizer.ggml.scores, and the file has none",
            ))
        }
    };
    if scores.len() < n {
        return Err(invalid(format!(
            "tokenizer.ggml.scores has {} entries for {n} tokens",
            scores.len()
        )));
    }

    // Every way to write each token as the concatenation of two tokens. llama.cpp merges the
    // pair whose concatenation scores highest, so the merge rank follows the score of the
    // result (ties: lower id first).
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        for (at, _) in text.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (vocab.get(&text[..at]), vocab.get(&text[at..])) {
                merges.push((scores[id], id as u32, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let pairs: Vec<(String, String)> = merges
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect();
    let mut builder = BPE::builder().vocab_and_merges(vocab, pairs).byte_fallback(true);
    if let Some(unk) = special_id(file, "tokenizer.ggml.unknown_token_id", Some(0), n)? {
        builder = builder.unk_token(tokens[unk as usize].clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| invalid(format!("building the SentencePiece BPE model: {e}")))?;

    // llama-vocab.cpp: SentencePiece vocabularies default to a space prefix; the file may
    // turn it off (`tokenizer.ggml.add_space_prefix`).
    let add_space_prefix = read_bool(file, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let replace = Replace::new(" ", SPM_SPACE).map_err(|e| invalid(format!("normalizer: {e}")))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        tokenizers::normalizers::Sequence::new(vec![Prepend::new(SPM_SPACE.to_owned()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE, " ")
            .map_err(|e| invalid(format!("decoder: {e}")))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| invalid(format!("normalizer: {e}")))?;
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}
