//! Bad input is a `CoreError` that names what is wrong, never a panic: broken or missing
//! files, tensors that contradict the config, configs the encoder does not run, bad batches.
//! Every case starts from a small valid model written on the fly and breaks one thing.

mod common;

use std::path::Path;

use aihal_core::CoreError;
use aihal_models::{BertBatch, BertConfig, BertModel, EmbedderOptions, LinearWeights, Pooling, SentenceEmbedder};
use aihal_quantize::QuantFormat;
use common::{cpu_executor, tiny_config_json, tiny_model_dir, tiny_tensors, write_safetensors, TensorMap, TINY};

fn load_model(dir: &Path) -> Result<BertModel, CoreError> {
    BertModel::load(&cpu_executor(), dir, LinearWeights::F32)
}

fn load_embedder(dir: &Path) -> Result<SentenceEmbedder, CoreError> {
    SentenceEmbedder::load(&cpu_executor(), dir, EmbedderOptions::default())
}

/// The error's text must name every one of `names`.
fn names(e: &CoreError, names: &[&str]) {
    let text = e.to_string();
    println!("{text}");
    for n in names {
        assert!(text.contains(n), "error {text:?} does not name {n:?}");
    }
}

/// A valid tiny model directory whose tensors were changed by `edit`.
fn with_tensors(edit: impl FnOnce(&mut TensorMap)) -> tempfile::TempDir {
    let dir = tiny_model_dir(7);
    let mut t = tiny_tensors(TINY, 7);
    edit(&mut t);
    write_safetensors(&dir.path().join("model.safetensors"), &t);
    dir
}

/// A valid tiny model directory whose `config.json` is `text`.
fn with_config(text: &str) -> tempfile::TempDir {
    let dir = tiny_model_dir(8);
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    dir
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = with_tensors(|t| {
        t.remove("encoder.layer.1.attention.self.key.bias");
    });
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidInput(_)), "{e:?}");
    names(
        &e,
        &[
            "missing tensor",
            "encoder.layer.1.attention.self.key.bias",
            "model.safetensors",
        ],
    );
    // The embedder reports the same.
    names(
        &load_embedder(dir.path()).unwrap_err(),
        &["encoder.layer.1.attention.self.key.bias"],
    );
}

#[test]
fn a_misshapen_tensor_is_named_with_both_shapes() {
    let dir = with_tensors(|t| {
        let (shape, v) = t.get_mut("encoder.layer.0.intermediate.dense.weight").unwrap();
        *shape = vec![TINY.intermediate - 1, TINY.hidden];
        v.truncate((TINY.intermediate - 1) * TINY.hidden);
    });
    let e = load_model(dir.path()).unwrap_err();
    let CoreError::ShapeMismatch { expected, actual, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(expected, &[TINY.intermediate, TINY.hidden]);
    assert_eq!(actual, &[TINY.intermediate - 1, TINY.hidden]);
    names(&e, &["encoder.layer.0.intermediate.dense.weight"]);
}

#[test]
fn a_tensor_of_another_dtype_is_named() {
    let dir = tiny_model_dir(9);
    let mut raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tiny_tensors(TINY, 9)
        .into_iter()
        .map(|(n, (s, v))| {
            (
                n,
                safetensors::Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let bias = raw.iter_mut().find(|(n, ..)| n == "embeddings.LayerNorm.bias").unwrap();
    bias.1 = safetensors::Dtype::I32;
    common::write_raw_safetensors(&dir.path().join("model.safetensors"), &raw);
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::Unsupported { .. }), "{e:?}");
    names(&e, &["embeddings.LayerNorm.bias", "I32"]);
}

#[test]
fn an_unknown_hidden_act_is_named() {
    let dir = with_config(&tiny_config_json(TINY, "relu"));
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidConfig(_)), "{e:?}");
    names(&e, &["hidden_act", "\"relu\"", "config.json"]);
    names(&load_embedder(dir.path()).unwrap_err(), &["\"relu\""]);
}

#[test]
fn a_config_that_does_not_match_the_weights_is_named() {
    let with = |edit: &dyn Fn(&mut common::Tiny)| {
        let mut t = TINY;
        edit(&mut t);
        with_config(&tiny_config_json(t, "gelu"))
    };
    // A narrower model: the first table read disagrees.
    let e = load_model(with(&|t| t.hidden = 32).path()).unwrap_err();
    assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e:?}");
    names(&e, &["embeddings.word_embeddings.weight"]);
    // Another vocabulary size.
    let e = load_model(with(&|t| t.vocab = 41).path()).unwrap_err();
    names(&e, &["embeddings.word_embeddings.weight", "[41, 64]", "[40, 64]"]);
    // Another feed-forward width.
    let e = load_model(with(&|t| t.intermediate = 256).path()).unwrap_err();
    names(&e, &["encoder.layer.0.intermediate.dense.weight"]);
    // More layers than the file has.
    let e = load_model(with(&|t| t.layers = 3).path()).unwrap_err();
    names(&e, &["missing tensor", "encoder.layer.2."]);
    // Fewer layers than the file has.
    let e = load_model(with(&|t| t.layers = 1).path()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidConfig(_)), "{e:?}");
    names(&e, &["more encoder layers", "num_hidden_layers 1"]);
    // Heads that do not divide the width.
    let e = load_model(with(&|t| t.heads = 5).path()).unwrap_err();
    names(&e, &["num_attention_heads 5", "hidden_size 64"]);
}

#[test]
fn malformed_configs_are_named() {
    let e = load_model(with_config("{ not json").path()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidConfig(_)), "{e:?}");
    names(&e, &["config.json"]);
    let without_hidden = tiny_config_json(TINY, "gelu").replace("\"hidden_size\": 64,", "");
    names(
        &load_model(with_config(&without_hidden).path()).unwrap_err(),
        &["hidden_size"],
    );
    let relative = tiny_config_json(TINY, "gelu").replace("\"absolute\"", "\"relative_key\"");
    names(
        &load_model(with_config(&relative).path()).unwrap_err(),
        &["relative_key"],
    );
    let roberta = tiny_config_json(TINY, "gelu").replace("\"model_type\": \"bert\"", "\"model_type\": \"roberta\"");
    names(&load_model(with_config(&roberta).path()).unwrap_err(), &["roberta"]);
    let zero = tiny_config_json(TINY, "gelu").replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 0");
    names(
        &load_model(with_config(&zero).path()).unwrap_err(),
        &["num_hidden_layers"],
    );
    assert!(BertConfig::from_json(&tiny_config_json(TINY, "gelu_new")).is_ok());
}

#[test]
fn missing_and_broken_files_are_named() {
    let dir = tiny_model_dir(10);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = load_embedder(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::Io(_)), "{e:?}");
    names(&e, &["tokenizer.json"]);

    std::fs::write(dir.path().join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
    let e = load_embedder(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidInput(_)), "{e:?}");
    names(&e, &["tokenizer", "tokenizer.json"]);

    let dir = tiny_model_dir(11);
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    names(&load_embedder(dir.path()).unwrap_err(), &["config.json"]);

    let dir = tiny_model_dir(12);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::Io(_)), "{e:?}");
    names(&e, &["model.safetensors"]);

    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    names(&load_model(dir.path()).unwrap_err(), &["model.safetensors", "empty"]);
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidInput(_)), "{e:?}");
    names(&e, &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn bad_pooling_configs_are_named() {
    let dir = tiny_model_dir(13);
    let pooling = dir.path().join("1_Pooling/config.json");
    std::fs::write(&pooling, r#"{"pooling_mode_max_tokens": true}"#).unwrap();
    names(
        &load_embedder(dir.path()).unwrap_err(),
        &["pooling_mode_max_tokens", "1_Pooling"],
    );
    std::fs::write(
        &pooling,
        r#"{"pooling_mode_mean_tokens": true, "word_embedding_dimension": 65}"#,
    )
    .unwrap();
    names(
        &load_embedder(dir.path()).unwrap_err(),
        &["word_embedding_dimension 65", "64"],
    );
    std::fs::write(&pooling, r#"{"pooling_mode_mean_tokens": false}"#).unwrap();
    names(&load_embedder(dir.path()).unwrap_err(), &["no pooling mode"]);
    // No pooling config at all: mean pooling.
    std::fs::remove_file(&pooling).unwrap();
    assert_eq!(load_embedder(dir.path()).unwrap().pooling(), Pooling::Mean);
    std::fs::create_dir_all(pooling.parent().unwrap()).unwrap();
    std::fs::write(&pooling, r#"{"pooling_mode_cls_token": true}"#).unwrap();
    assert_eq!(load_embedder(dir.path()).unwrap().pooling(), Pooling::Cls);
}

#[test]
fn bad_batches_are_refused() {
    let dir = tiny_model_dir(14);
    let embedder = load_embedder(dir.path()).unwrap();
    let e = embedder.embed(&[]).unwrap_err();
    assert!(matches!(e, CoreError::InvalidInput(_)), "{e:?}");
    names(&e, &["empty"]);
    names(&BertBatch::new::<Vec<u32>>(&[], 0).unwrap_err(), &["batch is empty"]);
    names(
        &BertBatch::new(&[vec![2, 3], vec![]], 0).unwrap_err(),
        &["sequence 1 is empty"],
    );
    names(
        &BertBatch::with_type_ids(&[vec![2, 3]], &[vec![0]], 0).unwrap_err(),
        &["type ids of sequence 0"],
    );

    let model = embedder.model();
    let e = model
        .forward(&BertBatch::new(&[vec![2, 40, 3]], 0).unwrap())
        .unwrap_err();
    names(&e, &["token id 40", "vocabulary size 40"]);
    let e = model
        .forward(&BertBatch::with_type_ids(&[vec![2, 5, 3]], &[vec![0, 2, 0]], 0).unwrap())
        .unwrap_err();
    names(&e, &["token type ids", "token id 2"]);
    let e = model
        .forward(&BertBatch::new(&[vec![5; TINY.max_pos + 1]], 0).unwrap())
        .unwrap_err();
    names(&e, &["33 tokens", "max_position_embeddings 32"]);
}

#[test]
fn bad_options_are_refused() {
    let dir = tiny_model_dir(15);
    let exec = cpu_executor();
    for options in [
        EmbedderOptions::default().max_tokens(0),
        EmbedderOptions::default().max_tokens(TINY.max_pos + 1),
        EmbedderOptions::default().batch_size(0),
    ] {
        let e = SentenceEmbedder::load(&exec, dir.path(), options).unwrap_err();
        assert!(matches!(e, CoreError::InvalidConfig(_)), "{e:?}");
        names(&e, &["max_tokens", "batch_size"]);
    }
    // A format whose block does not divide a row (TQ2_0 blocks are 256 wide, rows 64).
    let e = BertModel::load(&exec, dir.path(), LinearWeights::quantized(QuantFormat::Tq2_0)).unwrap_err();
    names(&e, &["quantizing encoder.layer.0.attention.self.query.weight", "tq2_0"]);
}

#[test]
fn sentence_bert_config_sets_the_default_truncation() {
    let exec = cpu_executor();
    let dir = tiny_model_dir(16);
    let load = |options: EmbedderOptions| SentenceEmbedder::load(&exec, dir.path(), options);
    // Without the file: the model's positions.
    assert_eq!(load(EmbedderOptions::default()).unwrap().max_tokens(), TINY.max_pos);
    let config = dir.path().join("sentence_bert_config.json");
    std::fs::write(&config, r#"{"max_seq_length": 8, "do_lower_case": false}"#).unwrap();
    let embedder = load(EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.max_tokens(), 8);
    // Truncated there: a long sentence embeds as its first 8 tokens do.
    let long = "the quick brown fox jumps over the lazy dog again and again";
    let short = load(EmbedderOptions::default().max_tokens(8)).unwrap();
    assert_eq!(embedder.embed(&[long]).unwrap(), short.embed(&[long]).unwrap());
    // An explicit option wins over the file.
    assert_eq!(
        load(EmbedderOptions::default().max_tokens(16)).unwrap().max_tokens(),
        16
    );
    // A file that does not state a length is as no file.
    std::fs::write(&config, r#"{"do_lower_case": false}"#).unwrap();
    assert_eq!(load(EmbedderOptions::default()).unwrap().max_tokens(), TINY.max_pos);
    for (text, what) in [
        ("{", "sentence_bert_config.json"),
        (r#"{"max_seq_length": 0}"#, "max_seq_length 0"),
        (r#"{"max_seq_length": "long"}"#, "is not a positive integer"),
        (r#"{"max_seq_length": 33}"#, "sentence_bert_config.json"),
    ] {
        std::fs::write(&config, text).unwrap();
        let e = load(EmbedderOptions::default()).unwrap_err();
        assert!(matches!(e, CoreError::InvalidConfig(_)), "{text}: {e:?}");
        names(&e, &[what]);
    }
}
