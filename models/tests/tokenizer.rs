//! GGUF tokenizers and chat templates (`aihal_models::tokenizer`).
//!
//! On the two real files in `.testdata/gguf` (skipped loudly when missing, an error with
//! `AIHAL_REQUIRE_TESTDATA=1`): token ids equal llama.cpp's `llama-tokenize` ids recorded in
//! `tests/fixtures/tokenizer/*.json` (exact equality), decode inverts encode, the streaming
//! detokenizer yields the same text as `decode`, and the chat templates render what reading
//! them says. On small GGUF files written here: hand-checked BPE and SentencePiece merges,
//! and malformed metadata that must give a `CoreError`, never a panic.
mod common;

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aihal_core::CoreError;
use aihal_models::tokenizer::{ChatMessage, ChatTemplate, GgufTokenizer};
use aihal_quantize::GgufFile;
use common::Data;

fn main() {
    common::run(vec![
        common::trial(
            "smollm_ids_equal_llama_cpp",
            &[Data::Gguf(SMOLLM)],
            smollm_ids_equal_llama_cpp,
        ),
        common::trial(
            "gemma_ids_equal_llama_cpp",
            &[Data::Gguf(GEMMA)],
            gemma_ids_equal_llama_cpp,
        ),
        common::trial(
            "smollm_round_trip_and_stream",
            &[Data::Gguf(SMOLLM)],
            smollm_round_trip_and_stream,
        ),
        common::trial(
            "gemma_round_trip_and_stream",
            &[Data::Gguf(GEMMA)],
            gemma_round_trip_and_stream,
        ),
        common::trial(
            "stream_holds_back_split_characters",
            &[Data::Gguf(SMOLLM)],
            stream_holds_back_split_characters,
        ),
        common::trial(
            "stream_holds_back_byte_fallback_tokens",
            &[Data::Gguf(GEMMA)],
            stream_holds_back_byte_fallback_tokens,
        ),
        common::trial(
            "special_ids_follow_the_files",
            &[Data::Gguf(SMOLLM), Data::Gguf(GEMMA)],
            special_ids_follow_the_files,
        ),
        common::trial(
            "ids_outside_the_vocabulary_are_errors",
            &[Data::Gguf(SMOLLM)],
            ids_outside_the_vocabulary_are_errors,
        ),
        common::trial("smollm_chat_template", &[Data::Gguf(SMOLLM)], smollm_chat_template),
        common::trial(
            "gemma_file_has_no_chat_template_and_a_builtin_one",
            &[Data::Gguf(GEMMA)],
            gemma_file_has_no_chat_template_and_a_builtin_one,
        ),
        common::trial("gemma3_chat_template", &[Data::Gguf(GEMMA)], gemma3_chat_template),
        common::trial(
            "python_string_methods_in_templates",
            &[],
            python_string_methods_in_templates,
        ),
        common::trial("tiny_gpt2_vocabulary", &[], tiny_gpt2_vocabulary),
        common::trial("tiny_sentencepiece_vocabulary", &[], tiny_sentencepiece_vocabulary),
        common::trial("bad_metadata_is_an_error", &[], bad_metadata_is_an_error),
    ]);
}

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

/// The parsed header of a real GGUF file (the harness runs a test that needs one only when
/// it is there: [`common::Data::Gguf`]).
fn real_file(name: &str) -> GgufFile {
    let path = common::gguf_path(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    GgufFile::read(&mut BufReader::new(file)).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// One file and its tokenizer, built once per test binary (Gemma's 262,144-token vocabulary
/// takes seconds in a debug build).
struct Loaded {
    file: GgufFile,
    tokenizer: GgufTokenizer,
}

fn loaded(name: &str) -> &'static Loaded {
    static SMOL: OnceLock<Loaded> = OnceLock::new();
    static GEM: OnceLock<Loaded> = OnceLock::new();
    let cell = if name == SMOLLM { &SMOL } else { &GEM };
    cell.get_or_init(|| {
        let file = real_file(name);
        let tokenizer = GgufTokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("tokenizer of {name}: {e}"));
        Loaded { file, tokenizer }
    })
}

#[derive(serde::Deserialize)]
struct Fixture {
    model: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn strings() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("strings.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check_llama_cpp_ids(name: &str, fixture: &str) {
    let l = loaded(name);
    let path = fixtures().join(fixture);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.model, name);
    assert_eq!(fixture.cases.len(), strings().len(), "the fixture covers strings.json");
    let mut failures = Vec::new();
    for case in &fixture.cases {
        // llama-tokenize adds BOS when the file asks for it, as `encode(.., true)` does.
        let ids = l.tokenizer.encode(&case.text, true).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}:\n  llama.cpp {:?}\n  aihal     {:?}",
                case.text, case.ids, ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: ids differ from llama.cpp's:\n{}",
        failures.join("\n")
    );
}

fn smollm_ids_equal_llama_cpp() {
    check_llama_cpp_ids(SMOLLM, "smollm2-135m-instruct.json");
}

fn gemma_ids_equal_llama_cpp() {
    check_llama_cpp_ids(GEMMA, "gemma-3-270m.json");
}

/// `decode(encode(s))` gives `s` back, and streaming gives the same text as `decode`.
fn check_round_trip_and_stream(name: &str) {
    let l = loaded(name);
    let t = &l.tokenizer;
    for s in strings() {
        let ids = t.encode(&s, false).unwrap();
        assert_eq!(
            t.decode(&ids, false).unwrap(),
            s,
            "{name}: decode(encode({s:?})) = ids {ids:?}"
        );

        for skip_special in [true, false] {
            let mut stream = t.stream_with(skip_special);
            let mut streamed = String::new();
            for &id in &ids {
                if let Some(piece) = stream.push(id).unwrap() {
                    assert!(
                        !piece.contains('\u{FFFD}'),
                        "{name}: {s:?}: a piece has a broken character"
                    );
                    streamed.push_str(&piece);
                }
            }
            assert_eq!(
                streamed,
                t.decode(&ids, skip_special).unwrap(),
                "{name}: streamed text of {s:?} (skip_special {skip_special})"
            );
        }
    }
    // With BOS added, decoding without special tokens still gives the text.
    let ids = t.encode("Hello world", true).unwrap();
    assert_eq!(t.decode(&ids, true).unwrap(), "Hello world");
}

fn smollm_round_trip_and_stream() {
    check_round_trip_and_stream(SMOLLM);
}

fn gemma_round_trip_and_stream() {
    check_round_trip_and_stream(GEMMA);
}

fn stream_holds_back_split_characters() {
    let l = loaded(SMOLLM);
    let t = &l.tokenizer;
    // The crab is four bytes; SmolLM2's byte-level BPE spells it with more than one token.
    let ids = t.encode("🦀", false).unwrap();
    assert!(ids.len() > 1, "expected a split character, got {ids:?}");
    let mut stream = t.stream();
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(
            stream.push(id).unwrap(),
            None,
            "no text before the character is complete"
        );
    }
    assert_eq!(stream.push(ids[ids.len() - 1]).unwrap().as_deref(), Some("🦀"));
    assert_eq!(stream.finish().unwrap(), None, "nothing held back");

    // A generation that stops inside the character: `finish` gives what `decode` gives for
    // the held-back ids, after the text already returned.
    let mut stream = t.stream();
    let prefix = t.encode("Hi", false).unwrap();
    let mut shown = String::new();
    for &id in prefix.iter().chain(&ids[..ids.len() - 1]) {
        shown.extend(stream.push(id).unwrap());
    }
    assert_eq!(shown, "Hi");
    let tail = stream.finish().unwrap().expect("the unfinished character");
    let all: Vec<u32> = prefix.iter().chain(&ids[..ids.len() - 1]).copied().collect();
    assert_eq!(shown + &tail, t.decode(&all, true).unwrap());
    assert!(tail.contains('\u{FFFD}'), "{tail:?}");
}

fn stream_holds_back_byte_fallback_tokens() {
    let l = loaded(GEMMA);
    let t = &l.tokenizer;
    // U+13000 is not in Gemma's vocabulary: it is spelled as its four UTF-8 bytes
    // <0xF0><0x93><0x80><0x80> (ids 238 + byte value, as llama.cpp's fixture also shows).
    let ids = t.encode("\u{13000}", false).unwrap();
    assert_eq!(ids, [238 + 0xF0, 238 + 0x93, 238 + 0x80, 238 + 0x80]);
    assert_eq!(t.token_text(ids[0]).as_deref(), Some("<0xF0>"));
    let mut stream = t.stream();
    for &id in &ids[..3] {
        assert_eq!(
            stream.push(id).unwrap(),
            None,
            "no text before the character is complete"
        );
    }
    assert_eq!(stream.push(ids[3]).unwrap().as_deref(), Some("\u{13000}"));
}

fn special_ids_follow_the_files() {
    {
        let l = loaded(SMOLLM);
        let t = &l.tokenizer;
        // SmolLM2: bos 1 (<|im_start|>), eos 2 (<|im_end|>), add_bos_token false.
        assert_eq!(
            (t.bos_id(), t.eos_id(), t.adds_bos(), t.adds_eos()),
            (Some(1), Some(2), false, false)
        );
        assert_eq!(t.vocab_size(), 49_152);
        // EOS is <|im_end|>; <|endoftext|> (0) also ends a generation, as in llama.cpp.
        assert_eq!(t.stop_ids(), &[2, 0]);
        assert_eq!(t.encode("Hi", true).unwrap(), t.encode("Hi", false).unwrap());
    }
    {
        let l = loaded(GEMMA);
        let t = &l.tokenizer;
        // Gemma 3: bos 2, eos 1, add_bos_token true; <end_of_turn> is 106.
        assert_eq!(
            (t.bos_id(), t.eos_id(), t.adds_bos(), t.adds_eos()),
            (Some(2), Some(1), true, false)
        );
        assert_eq!(t.vocab_size(), 262_144);
        assert_eq!(t.stop_ids(), &[1, 106]);
        let plain = t.encode("Hi", false).unwrap();
        assert_eq!(t.encode("Hi", true).unwrap(), [&[2][..], &plain].concat());
        assert_eq!(t.token_text(106).as_deref(), Some("<end_of_turn>"));
    }
}

fn ids_outside_the_vocabulary_are_errors() {
    let l = loaded(SMOLLM);
    let t = &l.tokenizer;
    let err = t.decode(&[5, 49152], false).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("49152"), "{err}");
    let err = t.stream().push(u32::MAX).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "4."),
        ChatMessage::new("user", "And 3+3?"),
    ]
}

fn smollm_chat_template() {
    let l = loaded(SMOLLM);
    let template = ChatTemplate::from_gguf(&l.file)
        .unwrap()
        .expect("SmolLM2 has a chat template");
    // Read from the template: a default system turn when the first message is not a system
    // message, then `<|im_start|>role\ncontent<|im_end|>\n` per message.
    let system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
    let turns = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n\
                 <|im_start|>user\nAnd 3+3?<|im_end|>\n";
    assert_eq!(
        template.render(&conversation(), false).unwrap(),
        format!("{system}{turns}")
    );
    assert_eq!(
        template.render(&conversation(), true).unwrap(),
        format!("{system}{turns}<|im_start|>assistant\n")
    );
    // A system message of its own replaces the default one.
    let with_system = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
    assert_eq!(
        template.render(&with_system, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The markers are single tokens.
    let ids = l
        .tokenizer
        .encode(&template.render(&with_system, true).unwrap(), true)
        .unwrap();
    assert_eq!(ids[0], 1, "<|im_start|>");
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2, "<|im_end|> twice");
}

fn gemma_file_has_no_chat_template_and_a_builtin_one() {
    let l = loaded(GEMMA);
    // This Gemma 3 270M file stores no `tokenizer.chat_template` (checked by listing its keys).
    assert!(ChatTemplate::from_gguf(&l.file).unwrap().is_none());
    // The built-in Gemma turn format renders what Gemma 3's own template renders (the
    // fixture's, see `gemma3_chat_template`) for conversations that template accepts.
    let builtin = ChatTemplate::builtin_for(&l.file)
        .unwrap()
        .expect("a built-in template for gemma3");
    let source = std::fs::read_to_string(fixtures().join("gemma3-chat-template.jinja")).unwrap();
    let reference = ChatTemplate::new(&source, "<bos>", "<eos>").unwrap();
    let with_system = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "  Hi  "),
        ChatMessage::new("assistant", "Hello!\n"),
        ChatMessage::new("user", "Bye"),
    ];
    for messages in [&conversation()[..], &with_system[..], &with_system[1..2]] {
        for generation in [false, true] {
            assert_eq!(
                builtin.render(messages, generation).unwrap(),
                reference.render(messages, generation).unwrap(),
                "{messages:?}, add_generation_prompt {generation}"
            );
        }
    }
    // A file with its own template gets no built-in one.
    assert!(ChatTemplate::builtin_for(&loaded(SMOLLM).file).unwrap().is_none());
}

/// Gemma 3's template (from the `tokenizer_config.json` of google/gemma-3 instruction-tuned
/// checkpoints): `raise_exception`, `| trim`, `is string`, list slicing, `loop.first`.
fn gemma3_chat_template() {
    let source = std::fs::read_to_string(fixtures().join("gemma3-chat-template.jinja")).unwrap();
    let template = ChatTemplate::new(&source, "<bos>", "<eos>").unwrap();
    // Read from the template: BOS, then `<start_of_turn>role\n` + trimmed content +
    // `<end_of_turn>\n`, "assistant" written "model", the system text put in front of the
    // first user message followed by a blank line.
    assert_eq!(
        template.render(&conversation(), true).unwrap(),
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4.<end_of_turn>\n\
         <start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n"
    );
    let with_system = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "  Hi  "),
        ChatMessage::new("assistant", "Hello!\n"),
    ];
    assert_eq!(
        template.render(&with_system, false).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    );
    // Roles that do not alternate: the template raises, and the message comes through.
    let bad = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
    let err = template.render(&bad, true).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");

    // The rendered prompt tokenizes with its markers as single tokens.
    {
        let l = loaded(GEMMA);
        let ids = l
            .tokenizer
            .encode(&template.render(&conversation(), true).unwrap(), false)
            .unwrap();
        assert_eq!(ids[0], 2, "<bos> written by the template");
        assert_eq!(ids.iter().filter(|&&id| id == 105).count(), 4, "<start_of_turn>");
        assert_eq!(ids.iter().filter(|&&id| id == 106).count(), 3, "<end_of_turn>");
    }
}

fn python_string_methods_in_templates() {
    let source =
        "{% for m in messages %}[{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip(' x') }}\
                  |{{ m.content.strip().startswith('ab') }}|{{ m.content.endswith('x') }}|{{ m.role.upper() }}\
                  |{{ m.content.replace('b', 'B') }}|{{ m.content.split() | join(',') }}|{{ m.get('role') }}\
                  |{{ m.get('name', 'none') }}|{{ m.items() | length }}]{% endfor %}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    let out = template.render(&[ChatMessage::new("user", " ab cx")], false).unwrap();
    assert_eq!(out, "[ab cx|ab cx| ab c|True|True|USER| aB cx|ab,cx|user|none|2]");
    // A method no template uses is an error, not silence.
    let template = ChatTemplate::new("{{ messages[0].content.frobnicate() }}", "", "").unwrap();
    assert!(template.render(&[ChatMessage::new("user", "x")], false).is_err());
    // A template that does not parse is an error at construction.
    assert!(matches!(
        ChatTemplate::new("{% for %}", "", ""),
        Err(CoreError::InvalidInput(_))
    ));
}

// ---- small GGUF files written here ----

enum V<'a> {
    Str(&'a str),
    U32(u32),
    Bool(bool),
    Strs(&'a [&'a str]),
    I32s(&'a [i32]),
    F32s(&'a [f32]),
}

/// A GGUF v3 file with the given metadata and no tensors.
fn gguf_bytes(kvs: &[(&str, V)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        string(&mut out, key);
        match value {
            V::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            V::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            V::Bool(b) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*b));
            }
            V::Strs(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in *items {
                    string(&mut out, s);
                }
            }
            V::I32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            V::F32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(6u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
        }
    }
    out
}

fn parse(kvs: &[(&str, V)]) -> GgufFile {
    GgufFile::read(&mut Cursor::new(gguf_bytes(kvs))).unwrap()
}

/// Byte-level BPE: "ab ab" splits into "ab" and " ab" (byte-level "Ġab"); merges apply in
/// rank order ("Ġ a" before "a b", so " ab" becomes "Ġa" + "b", then "Ġab"); the control token
/// is matched whole in the text.
fn tiny_gpt2_vocabulary() {
    let tokens = ["a", "b", "ab", "Ġ", "Ġa", "Ġab", "<|end|>"];
    let file = parse(&[
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.pre", V::Str("gpt-2")),
        ("tokenizer.ggml.tokens", V::Strs(&tokens)),
        ("tokenizer.ggml.token_type", V::I32s(&[1, 1, 1, 1, 1, 1, 3])),
        ("tokenizer.ggml.merges", V::Strs(&["Ġ a", "a b", "Ġa b"])),
        ("tokenizer.ggml.eos_token_id", V::U32(6)),
        ("tokenizer.ggml.add_eos_token", V::Bool(true)),
    ]);
    let t = GgufTokenizer::from_gguf(&file).unwrap();
    assert_eq!(t.encode("ab ab<|end|>", false).unwrap(), [2, 5, 6]);
    assert_eq!(t.encode("ab", true).unwrap(), [2, 6], "add_eos_token appends EOS");
    assert_eq!(t.decode(&[2, 5, 6], false).unwrap(), "ab ab<|end|>");
    assert_eq!(t.decode(&[2, 5, 6], true).unwrap(), "ab ab");
    // No BOS key: llama.cpp's default id for "gpt2" (11) is outside this vocabulary.
    assert_eq!(t.bos_id(), None);
    assert_eq!(t.stop_ids(), &[6]);
}

/// SentencePiece BPE: the pair whose concatenation scores highest merges first.
/// "ab" with a space prefix is "▁ab"; with "▁a" scoring above "ab" it becomes [▁a, b], with the
/// scores swapped [▁, ab]. "!" is not a token and falls back to its byte token.
fn tiny_sentencepiece_vocabulary() {
    let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "<0x21>"];
    let types = [2, 3, 3, 1, 1, 1, 1, 1, 6];
    let build = |scores: &[f32]| {
        // No add_space_prefix, add_bos_token or BOS/EOS keys: llama.cpp's defaults apply
        // (space prefix on, BOS added, BOS 1, EOS 2).
        let file = parse(&[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
            ("tokenizer.ggml.token_type", V::I32s(&types)),
            ("tokenizer.ggml.scores", V::F32s(scores)),
        ]);
        GgufTokenizer::from_gguf(&file).unwrap()
    };
    let t = build(&[0.0, 0.0, 0.0, -3.0, -4.0, -5.0, -1.0, -2.0, 0.0]);
    assert_eq!(t.encode("ab", true).unwrap(), [1, 6, 5]);
    assert_eq!(t.encode("ab!", false).unwrap(), [6, 5, 8]);
    assert_eq!(t.decode(&[1, 6, 5, 8], true).unwrap(), "ab!");
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
    let t = build(&[0.0, 0.0, 0.0, -3.0, -4.0, -5.0, -2.0, -1.0, 0.0]);
    assert_eq!(t.encode("ab", false).unwrap(), [3, 7]);
    assert_eq!(t.decode(&[3, 7], false).unwrap(), "ab");
}

fn expect_error(kvs: &[(&str, V)], kind: fn(&CoreError) -> bool, needle: &str) {
    let file = parse(kvs);
    let err = GgufTokenizer::from_gguf(&file).unwrap_err();
    assert!(kind(&err), "wrong kind of error: {err:?}");
    assert!(
        err.to_string().contains(needle),
        "{err} (expected it to mention {needle:?})"
    );
}

fn invalid_input(e: &CoreError) -> bool {
    matches!(e, CoreError::InvalidInput(_))
}

fn bad_metadata_is_an_error() {
    let tokens = ["a", "b", "ab"];
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("bert")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
        ],
        |e| matches!(e, CoreError::Unsupported { .. }),
        "\"bert\"",
    );
    expect_error(
        &[("tokenizer.ggml.tokens", V::Strs(&tokens))],
        invalid_input,
        "tokenizer.ggml.model",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.merges", V::Strs(&["a b"])),
        ],
        invalid_input,
        "tokenizer.ggml.tokens",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.tokens", V::U32(3)),
        ],
        invalid_input,
        "not an array of strings",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.tokens", V::Strs(&[])),
        ],
        invalid_input,
        "empty",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
        ],
        invalid_input,
        "tokenizer.ggml.merges",
    );
    // Merges that name unknown tokens, make an unknown token, or lack the space.
    for (merge, needle) in [("a c", "\"c\""), ("b a", "ba"), ("ab", "separated by a space")] {
        expect_error(
            &[
                ("tokenizer.ggml.model", V::Str("gpt2")),
                ("tokenizer.ggml.pre", V::Str("gpt-2")),
                ("tokenizer.ggml.tokens", V::Strs(&tokens)),
                ("tokenizer.ggml.merges", V::Strs(&[merge])),
            ],
            invalid_input,
            needle,
        );
    }
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.pre", V::Str("no-such-pre")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
            ("tokenizer.ggml.merges", V::Strs(&["a b"])),
        ],
        |e| matches!(e, CoreError::Unsupported { .. }),
        "no-such-pre",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.tokens", V::Strs(&["a", "b", "a"])),
            ("tokenizer.ggml.merges", V::Strs(&[])),
        ],
        invalid_input,
        "twice",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
            ("tokenizer.ggml.merges", V::Strs(&["a b"])),
            ("tokenizer.ggml.bos_token_id", V::U32(3)),
        ],
        invalid_input,
        "bos_token_id",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
            ("tokenizer.ggml.token_type", V::I32s(&[1, 1])),
            ("tokenizer.ggml.merges", V::Strs(&["a b"])),
        ],
        invalid_input,
        "token_type",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
        ],
        invalid_input,
        "tokenizer.ggml.scores",
    );
    expect_error(
        &[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(&tokens)),
            ("tokenizer.ggml.scores", V::F32s(&[0.0])),
        ],
        invalid_input,
        "scores",
    );
    // A chat template that is not a string, or does not parse.
    let file = parse(&[("tokenizer.chat_template", V::U32(1))]);
    assert!(matches!(
        ChatTemplate::from_gguf(&file),
        Err(CoreError::InvalidInput(_))
    ));
    let file = parse(&[("tokenizer.chat_template", V::Str("{% if %}"))]);
    assert!(matches!(
        ChatTemplate::from_gguf(&file),
        Err(CoreError::InvalidInput(_))
    ));
    let file = parse(&[("general.name", V::Str("none"))]);
    assert!(ChatTemplate::from_gguf(&file).unwrap().is_none());
}
